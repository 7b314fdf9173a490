"""ortprof startup hook, injected by putting this directory first on PYTHONPATH.

Standalone on purpose: the workload may run in another venv where ortprof is
not installed. It (1) chains the environment's own sitecustomize, (2) patches
onnxruntime.InferenceSession when onnxruntime gets imported, to record every
session's settings and the start and latency of every run(), (3) applies
settings overrides (ORTPROF_SESSION_OVERRIDES) for `ortprof sweep`.

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

    def __init__(self, path_or_bytes, sess_options=None, *args, **kwargs):
        if overrides:
            if sess_options is None:
                sess_options = ort.SessionOptions()
            _apply_overrides(ort, sess_options, overrides)
        created = time.monotonic()
        original_init(self, path_or_bytes, sess_options, *args, **kwargs)
        self._ortprof_session = next(counter)
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
            "load_seconds": time.monotonic() - created, "mono": created,
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
        wrapper.__name__ = original.__name__
        wrapper.__doc__ = original.__doc__
        return wrapper

    session_class.__init__ = __init__
    session_class.run = timed(original_run, "run")
    if original_run_iobinding is not None:
        session_class.run_with_iobinding = timed(original_run_iobinding, "run_with_iobinding")
    session_class._ortprof_patched = True


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
