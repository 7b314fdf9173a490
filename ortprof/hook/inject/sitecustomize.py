"""ortprof startup hook, injected by putting this directory first on PYTHONPATH.

Standalone on purpose: the workload may run in another venv where ortprof is
not installed. It (1) chains the environment's own sitecustomize, (2) patches
onnxruntime.InferenceSession when onnxruntime gets imported, to record every
session's settings and the start and latency of every run(), (3) applies
settings overrides (ORTPROF_SESSION_OVERRIDES) for `ortprof sweep`, (4) notes
the threads each session creation starts (its pools' workers) and, with
ORTPROF_ORT_PROFILE=1, turns on ORT's own profiler for every session and ends
it (end_profiling) at exit or when `ortprof record` closes its window.

Records go as JSON lines to $ORTPROF_HOOK_DIR/hook-<pid>.jsonl. run() timings
are buffered and flushed in batches so the per-call cost stays a few
microseconds; `warm` is flushed at once, it tells `ortprof record` to start.
"""
import json
import os
import sys
import threading
import time

_HOOK_DIR = os.environ.get("ORTPROF_HOOK_DIR")
_WARMUP_RUNS = int(os.environ.get("ORTPROF_WARMUP_RUNS", "5") or 5)
_FLUSH_EVERY = 512          # run() records per batch
_FLUSH_SECONDS = 1.0        # or at least this often
_MODULE = "onnxruntime.capi.onnxruntime_inference_collection"
_ORT_PROFILE = os.environ.get("ORTPROF_ORT_PROFILE") == "1"
_ORT_PROFILE_STOP = "ort-profile.stop"   # written by `ortprof record` when its window closes

# Keys probed on the effective SessionOptions (entries set in code are caught too).
_KNOWN_CONFIG_KEYS = (
    "session.intra_op.allow_spinning", "session.inter_op.allow_spinning",
    "session.intra_op.spin_duration_us", "session.inter_op.spin_duration_us",
    "session.intra_op.spin_backoff_max", "session.inter_op.spin_backoff_max",
    "session.force_spinning_stop", "session.dynamic_block_base",
    "session.intra_op_thread_affinities", "session.use_env_allocators",
    "session.set_denormal_as_zero", "session.disable_prepacking",
    "session.use_device_allocator_for_initializers", "session.x64quantprecision",
)


def _chain_existing_sitecustomize():
    """Import the sitecustomize this one shadows, if any."""
    import importlib.machinery
    import importlib.util
    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's sitecustomize failing must look as it would without us
        print(f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n{type(exc).__name__}: {exc}",
              file=sys.stderr)


class _Recorder:
    def __init__(self, directory):
        self.path = os.path.join(directory, f"hook-{os.getpid()}.jsonl")
        self.broken = False
        self.lock = threading.Lock()
        self.pending = []
        self.last_flush = time.monotonic()
        self.sessions = 0
        self.warm_sent = False
        self.run_count = 0
        self.ort_profiles = None     # _OrtProfiles with ORTPROF_ORT_PROFILE=1
        self.write({"event": "hello", "pid": os.getpid(), "ppid": os.getppid(),
                    "argv": sys.argv, "python": sys.version.split()[0],
                    "mono": time.monotonic(), "unix": time.time()})

    def write(self, record):
        if self.broken:
            return
        line = json.dumps(record, default=str) + "\n"
        try:
            with self.lock, open(self.path, "a") as stream:
                stream.write(line)
        except OSError as exc:  # disk full, directory gone: never break the workload's run()
            self.broken = True
            print(f"ortprof hook: stopped recording ({exc})", file=sys.stderr)

    def add_run(self, session_id, start, duration, kind):
        # Called on the hot path: append a tuple, flush rarely.
        self.pending.append((session_id, start, duration, threading.get_native_id(), kind))
        self.run_count += 1
        if not self.warm_sent and self.run_count >= _WARMUP_RUNS:
            self.warm_sent = True
            self.flush()
            self.write({"event": "warm", "pid": os.getpid(), "runs": self.run_count,
                        "mono": time.monotonic()})
        elif len(self.pending) >= _FLUSH_EVERY or start - self.last_flush >= _FLUSH_SECONDS:
            self.flush()

    def flush(self):
        with self.lock:
            batch, self.pending = self.pending, []
            self.last_flush = time.monotonic()
        if batch:
            self.write({"event": "runs", "pid": os.getpid(),
                        "fields": ["session", "start_mono", "duration_s", "tid", "kind"],
                        "runs": batch})


def _task_tids():
    """Kernel thread ids of this process (pool workers started by a session show up here)."""
    try:
        return {int(name) for name in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _clock_pair():
    """(unix ns, CLOCK_MONOTONIC ns, bracket ns): the tightest of a few paired reads.
    ORT's profiler counts from std::chrono::high_resolution_clock, which is the
    system clock in libstdc++; perf's samples are CLOCK_MONOTONIC."""
    best = None
    for _ in range(5):
        before = time.monotonic_ns()
        unix = time.time_ns()
        after = time.monotonic_ns()
        if best is None or after - before < best[2]:
            best = (unix, (before + after) // 2, after - before)
    return best


class _OrtProfiles:
    """Sessions whose ORT profiler the hook turned on; ends each one exactly once."""

    def __init__(self, recorder):
        self.recorder = recorder
        self.sessions = {}           # session id -> session (ended ones are dropped)
        self.busy = {}               # session id -> run() calls in progress
        self.lock = threading.Lock()
        self.stop_requested = False

    def prepare(self, ort, options, session_number):
        if options is None:
            options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(_HOOK_DIR, f"ort-profile-{os.getpid()}-{session_number}")
        return options

    def started(self, session):
        """The clock facts of a session whose profiler just started, for its `session` record."""
        try:
            start_ns = session.get_profiling_start_time_ns()
        except Exception as exc:
            return {"error": repr(exc)}
        unix, mono, bracket = _clock_pair()
        with self.lock:
            self.sessions[session._ortprof_session] = session
        # 1.15.1 and 1.31.1 count from the system clock; a build whose profiler uses steady_clock
        # (CLOCK_MONOTONIC) would give a start near `mono` instead.
        clock = "system" if abs(start_ns - unix) <= abs(start_ns - mono) else "monotonic"
        return {"start_unix_ns": start_ns, "unix_minus_mono_ns": unix - mono, "pair_bracket_ns": bracket,
                "clock": clock, "prefix": session._ortprof_prefix}

    def end(self, session_id, why):
        with self.lock:
            session = self.sessions.pop(session_id, None)
        if session is None:
            return
        started = time.monotonic()
        try:
            path = session.end_profiling()
        except Exception as exc:
            self.recorder.write({"event": "ort_profile_end", "pid": os.getpid(), "session": session_id, "error": repr(exc)})
            return
        self.recorder.write({"event": "ort_profile_end", "pid": os.getpid(), "session": session_id, "file": path, "why": why,
                             "mono": started, "write_seconds": time.monotonic() - started})

    def end_all(self, why, idle_only=False):
        with self.lock:
            ids = [sid for sid in self.sessions if not (idle_only and self.busy.get(sid))]
        for session_id in ids:
            self.end(session_id, why)

    def watch(self):
        """Background thread: when the window closes, end idle sessions (busy ones end after their run())."""
        marker = os.path.join(_HOOK_DIR, _ORT_PROFILE_STOP)
        while not os.path.exists(marker):
            time.sleep(0.05)
        self.stop_requested = True
        time.sleep(0.2)              # let run() calls in flight end their own profile
        self.end_all("window", idle_only=True)
        time.sleep(1.0)
        self.end_all("window")


def _overrides():
    raw = os.environ.get("ORTPROF_SESSION_OVERRIDES")
    return json.loads(raw) if raw else {}


def _apply_overrides(ort, options, overrides):
    """Force sweep settings onto `options`, whatever the user's code set."""
    for attribute in ("intra_op_num_threads", "inter_op_num_threads"):
        if attribute in overrides:
            setattr(options, attribute, int(overrides[attribute]))
    mode = overrides.get("execution_mode")
    if mode:
        options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if mode == "parallel"
                                  else ort.ExecutionMode.ORT_SEQUENTIAL)
    for key, value in overrides.get("config", {}).items():
        options.add_session_config_entry(key, str(value))


def _describe_options(options, entries_seen):
    described = {}
    for attribute in ("intra_op_num_threads", "inter_op_num_threads", "execution_mode",
                      "graph_optimization_level", "enable_profiling", "use_deterministic_compute",
                      "enable_cpu_mem_arena", "enable_mem_pattern", "log_severity_level"):
        try:
            value = getattr(options, attribute)
        except Exception:
            continue
        described[attribute] = getattr(value, "name", value)
    config = {}
    for key in set(_KNOWN_CONFIG_KEYS) | set(entries_seen):
        try:
            value = options.get_session_config_entry(key)
        except Exception:
            continue  # not set: ORT raises for absent keys
        config[key] = value
    described["config"] = dict(sorted(config.items()))
    return described


def _patch(module, recorder):
    import onnxruntime as ort
    session_class = module.InferenceSession
    if getattr(session_class, "_ortprof_patched", False):
        return
    entries_seen = set()
    original_add_entry = ort.SessionOptions.add_session_config_entry

    def add_session_config_entry(self, key, value):
        entries_seen.add(key)
        return original_add_entry(self, key, value)

    try:
        ort.SessionOptions.add_session_config_entry = add_session_config_entry
    except (AttributeError, TypeError):
        pass  # a build whose pybind class refuses attributes: probe known keys only

    original_init = session_class.__init__
    original_run = session_class.run
    original_run_iobinding = getattr(session_class, "run_with_iobinding", None)
    counter = iter(range(1, 1 << 30))
    overrides = _overrides()
    profiles = recorder.ort_profiles

    def __init__(self, path_or_bytes, sess_options=None, *args, **kwargs):
        if overrides:
            if sess_options is None:
                sess_options = ort.SessionOptions()
            _apply_overrides(ort, sess_options, overrides)
        session_number = next(counter)
        if profiles is not None:
            sess_options = profiles.prepare(ort, sess_options, session_number)
            self._ortprof_prefix = sess_options.profile_file_prefix
        threads_before = _task_tids()
        created = time.monotonic()
        original_init(self, path_or_bytes, sess_options, *args, **kwargs)
        load_seconds = time.monotonic() - created
        # Threads that appeared while the session was created: its pools' workers, intra-op pool first.
        new_threads = sorted(_task_tids() - threads_before)
        self._ortprof_session = session_number
        ort_profile = profiles.started(self) if profiles is not None else None
        try:
            effective = self.get_session_options()
        except Exception:
            effective = sess_options
        model = path_or_bytes if isinstance(path_or_bytes, (str, os.PathLike)) else f"<{len(path_or_bytes)} bytes>"
        recorder.write({
            "event": "session", "session": self._ortprof_session, "pid": os.getpid(),
            "tid": threading.get_native_id(), "model": str(model),
            "providers": self.get_providers(), "ort_version": ort.__version__,
            "ort_file": getattr(ort, "__file__", None),
            "options": _describe_options(effective, entries_seen) if effective is not None else {},
            "overrides": overrides or None,
            "load_seconds": load_seconds, "mono": created, "new_threads": new_threads,
            "ort_profile": ort_profile,
        })

    def timed(original, kind):
        def wrapper(self, *args, **kwargs):
            # monotonic: the clock ortprof's windows and perf -k mono use (ns resolution on Linux)
            start = time.monotonic()
            try:
                return original(self, *args, **kwargs)
            finally:
                recorder.add_run(getattr(self, "_ortprof_session", 0), start,
                                 time.monotonic() - start, kind)
        if profiles is not None:
            wrapper = _ending_profile(wrapper, profiles)
        wrapper.__name__ = original.__name__
        wrapper.__doc__ = original.__doc__
        return wrapper

    session_class.__init__ = __init__
    session_class.run = timed(original_run, "run")
    if original_run_iobinding is not None:
        session_class.run_with_iobinding = timed(original_run_iobinding, "run_with_iobinding")
    session_class._ortprof_patched = True


def _ending_profile(timed_run, profiles):
    """run() that ends its session's ORT profile on the caller's thread once the window has closed
    (end_profiling from another thread while run() executes would race ORT's profiler)."""
    busy = profiles.busy

    def run(self, *args, **kwargs):
        session_id = getattr(self, "_ortprof_session", 0)
        busy[session_id] = busy.get(session_id, 0) + 1
        try:
            return timed_run(self, *args, **kwargs)
        finally:
            busy[session_id] -= 1
            if profiles.stop_requested:
                profiles.end(session_id, "window")
    return run


class _PatchOnImport:
    """Meta-path finder that patches ORT's session class right after its module loads."""

    def __init__(self, recorder):
        self.recorder = recorder

    def find_spec(self, name, path=None, target=None):
        if name != _MODULE:
            return None
        import importlib.machinery
        sys.meta_path.remove(self)
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        recorder = self.recorder

        def exec_and_patch(module):
            exec_module(module)
            try:
                _patch(module, recorder)
            except Exception as exc:  # never break the workload
                recorder.write({"event": "error", "where": "patch", "error": repr(exc)})

        spec.loader.exec_module = exec_and_patch
        return spec


def _install():
    if not _HOOK_DIR or not os.path.isdir(_HOOK_DIR):
        return
    recorder = _Recorder(_HOOK_DIR)
    import atexit
    atexit.register(recorder.flush)
    recorder.ort_profiles = _OrtProfiles(recorder) if _ORT_PROFILE else None
    if recorder.ort_profiles is not None:
        # Ctrl+C (SIGINT) raises KeyboardInterrupt, so normal exit and Ctrl+C both come through atexit.
        atexit.register(recorder.ort_profiles.end_all, "exit")
        threading.Thread(target=recorder.ort_profiles.watch, name="ortprof-ort-profile", daemon=True).start()
    if _MODULE in sys.modules:
        _patch(sys.modules[_MODULE], recorder)
    else:
        sys.meta_path.insert(0, _PatchOnImport(recorder))


try:
    _chain_existing_sitecustomize()
finally:
    try:
        _install()
    except Exception as _exc:  # the hook must never stop the workload from starting
        print(f"ortprof hook: disabled ({_exc!r})", file=sys.stderr)
