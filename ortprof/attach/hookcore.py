"""The startup hook's recording logic, shared by the two ways ortprof gets into a Python workload:

- the startup hook (ortprof/hook/inject/sitecustomize.py) loads this file by its path, in a
  workload `ortprof record` launches;
- `ortprof.attach` runs its source, followed by payload.py's, inside a process that already
  runs (ortprof.attach.payload_source()).

Standalone on purpose: standard library only and no package-relative imports, because it runs
in the workload's interpreter, where ortprof may not be installed. What it records: each
session's settings (`session`), the start, duration and thread of every run() and
run_with_iobinding() (`runs`, batched so the per-call cost stays a few microseconds), and the
threads each session's creation starts (its pools' workers). Where the records go is the
Recorder's sink (`emit`): a file for the startup hook, a pipe for an attached process.
"""
import json
import os
import sys
import threading
import time

MODULE = "onnxruntime.capi.onnxruntime_inference_collection"
FLUSH_EVERY = 512           # run() records per batch
FLUSH_SECONDS = 1.0         # or at least this often
RUN_FIELDS = ["session", "start_mono", "duration_s", "tid", "kind"]

# Keys probed on the effective SessionOptions (entries set in code are caught too).
KNOWN_CONFIG_KEYS = (
    "session.intra_op.allow_spinning", "session.inter_op.allow_spinning",
    "session.intra_op.spin_duration_us", "session.inter_op.spin_duration_us",
    "session.intra_op.spin_backoff_max", "session.inter_op.spin_backoff_max",
    "session.force_spinning_stop", "session.dynamic_block_base",
    "session.intra_op_thread_affinities", "session.use_env_allocators",
    "session.set_denormal_as_zero", "session.disable_prepacking",
    "session.use_device_allocator_for_initializers", "session.x64quantprecision",
)

_MISSING = object()


class Recorder:
    """Buffers run() timings and writes records as JSON lines through `emit` (a subclass's sink).
    A sink that fails stops the recording, never the workload's run()."""

    def __init__(self, warmup_runs=5, hello=None):
        self.broken = False
        self.lock = threading.Lock()
        self.pending = []
        self.last_flush = time.monotonic()
        self.sessions = 0
        self.warm_sent = False
        self.run_count = 0
        self.warmup_runs = warmup_runs
        self.ort_profiles = None     # the startup hook's _OrtProfiles with ORTPROF_ORT_PROFILE=1
        record = {"event": "hello", "pid": os.getpid(), "ppid": os.getppid(),
                  "argv": sys.argv, "python": sys.version.split()[0],
                  "mono": time.monotonic(), "unix": time.time()}
        record.update(hello or {})
        self.write(record)

    def emit(self, line):
        """Write one JSON line (called with self.lock held)."""
        raise NotImplementedError

    def stopped(self, exc):
        """The sink failed with `exc`; nothing more is written."""
        print(f"ortprof hook: stopped recording ({exc})", file=sys.stderr)

    def write(self, record):
        if self.broken:
            return
        line = json.dumps(record, default=str) + "\n"
        try:
            with self.lock:
                self.emit(line)
        except OSError as exc:  # disk full, directory gone: never break the workload's run()
            self.broken = True
            self.stopped(exc)

    def add_run(self, session_id, start, duration, kind):
        # Called on the hot path: append a tuple, flush rarely.
        self.pending.append((session_id, start, duration, threading.get_native_id(), kind))
        self.run_count += 1
        if not self.warm_sent and self.run_count >= self.warmup_runs:
            self.warm_sent = True
            self.flush()
            self.write({"event": "warm", "pid": os.getpid(), "runs": self.run_count,
                        "mono": time.monotonic()})
        elif len(self.pending) >= FLUSH_EVERY or start - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self):
        with self.lock:
            batch, self.pending = self.pending, []
            self.last_flush = time.monotonic()
        if batch:
            self.write({"event": "runs", "pid": os.getpid(), "fields": RUN_FIELDS, "runs": batch})


class FileRecorder(Recorder):
    """Records appended to <directory>/hook-<pid>.jsonl, the file opened for each write
    (no descriptor stays open in the workload)."""

    def __init__(self, directory, warmup_runs=5, hello=None):
        self.path = os.path.join(directory, f"hook-{os.getpid()}.jsonl")
        Recorder.__init__(self, warmup_runs, hello)

    def emit(self, line):
        with open(self.path, "a") as stream:
            stream.write(line)


def task_tids():
    """Kernel thread ids of this process (pool workers started by a session show up here)."""
    try:
        return {int(name) for name in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def describe_options(options, entries_seen):
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
    for key in set(KNOWN_CONFIG_KEYS) | set(entries_seen):
        try:
            value = options.get_session_config_entry(key)
        except Exception:
            continue  # not set: ORT raises for absent keys
        config[key] = value
    described["config"] = dict(sorted(config.items()))
    return described


def session_handle(session):
    """The session's identity while it lives, as the dispatcher probes and the report name it: the
    address of its pybind object (`session._sess`), None before it exists."""
    native = getattr(session, "_sess", None)
    return None if native is None else f"0x{id(native):x}"


def model_name(path_or_bytes):
    """How a session's model is named in its record: the path, or <N bytes> for a model in memory."""
    return path_or_bytes if isinstance(path_or_bytes, (str, os.PathLike)) else f"<{len(path_or_bytes)} bytes>"


class Patch:
    """What patch_session_class replaced: restore() puts each class attribute back as it was
    (the very object, or no attribute where the class inherited it), unless something else
    replaced our wrapper since; those are returned by name."""

    def __init__(self):
        self.replaced = []           # (owner, name, our object, the owner's own value or _MISSING)
        self.entries_seen = set()    # config keys set through add_session_config_entry

    def replace(self, owner, name, value):
        original = vars(owner).get(name, _MISSING)
        setattr(owner, name, value)
        self.replaced.append((owner, name, value, original))

    def restore(self):
        kept = []
        for owner, name, ours, original in reversed(self.replaced):
            if vars(owner).get(name, _MISSING) is not ours:
                kept.append(f"{owner.__name__}.{name}")
                continue
            try:
                if original is _MISSING:
                    delattr(owner, name)
                else:
                    setattr(owner, name, original)
            except (AttributeError, TypeError):
                kept.append(f"{owner.__name__}.{name}")
        self.replaced = []
        return kept


def patch_session_class(module, recorder, overrides=None, apply_overrides=None, ending_profile=None,
                        numbers=None, on_session=None):
    """Patch `module`'s InferenceSession so every session's settings and every run are recorded
    through `recorder`. The startup hook passes its settings overrides (with `apply_overrides`)
    and `ending_profile` (wraps the timed run() when ORT's profiler is on, recorder.ort_profiles);
    `numbers` yields session ids (from 1 by default); `on_session(session)` is called for each
    session created from now on. Returns the Patch, or None when the class is patched already."""
    import onnxruntime as ort
    session_class = module.InferenceSession
    if getattr(session_class, "_ortprof_patched", False):
        return None
    patch = Patch()
    entries_seen = patch.entries_seen
    original_add_entry = ort.SessionOptions.add_session_config_entry

    def add_session_config_entry(self, key, value):
        entries_seen.add(key)
        return original_add_entry(self, key, value)

    try:
        patch.replace(ort.SessionOptions, "add_session_config_entry", add_session_config_entry)
    except (AttributeError, TypeError):
        pass  # a build whose pybind class refuses attributes: probe known keys only

    original_init = session_class.__init__
    original_run = session_class.run
    original_run_iobinding = getattr(session_class, "run_with_iobinding", None)
    counter = numbers if numbers is not None else iter(range(1, 1 << 30))
    overrides = overrides or {}
    profiles = recorder.ort_profiles

    def __init__(self, path_or_bytes, sess_options=None, *args, **kwargs):
        if overrides:
            if sess_options is None:
                sess_options = ort.SessionOptions()
            apply_overrides(ort, sess_options, overrides)
        session_number = next(counter)
        if profiles is not None:
            sess_options = profiles.prepare(ort, sess_options, session_number)
            self._ortprof_prefix = sess_options.profile_file_prefix
        threads_before = task_tids()
        created = time.monotonic()
        original_init(self, path_or_bytes, sess_options, *args, **kwargs)
        load_seconds = time.monotonic() - created
        # Threads that appeared while the session was created: its pools' workers, intra-op pool first.
        new_threads = sorted(task_tids() - threads_before)
        self._ortprof_session = session_number
        if on_session is not None:
            on_session(self)
        ort_profile = profiles.started(self) if profiles is not None else None
        try:
            effective = self.get_session_options()
        except Exception:
            effective = sess_options
        recorder.write({
            "event": "session", "session": self._ortprof_session, "pid": os.getpid(),
            "handle": session_handle(self),
            "tid": threading.get_native_id(), "model": str(model_name(path_or_bytes)),
            "providers": self.get_providers(), "ort_version": ort.__version__,
            "ort_file": getattr(ort, "__file__", None),
            "options": describe_options(effective, entries_seen) if effective is not None else {},
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
            wrapper = ending_profile(wrapper, profiles)
        wrapper.__name__ = original.__name__
        wrapper.__doc__ = original.__doc__
        return wrapper

    patch.replace(session_class, "__init__", __init__)
    patch.replace(session_class, "run", timed(original_run, "run"))
    if original_run_iobinding is not None:
        patch.replace(session_class, "run_with_iobinding", timed(original_run_iobinding, "run_with_iobinding"))
    patch.replace(session_class, "_ortprof_patched", True)
    return patch
