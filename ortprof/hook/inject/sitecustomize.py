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

The recording itself (the recorder, the session class's patch, the options'
description) is ortprof/attach/hookcore.py, loaded by its path: `ortprof.attach`
runs the same code in processes that already run. Both files are standard
library only.
"""
import json
import os
import sys
import threading
import time

_HOOK_DIR = os.environ.get("ORTPROF_HOOK_DIR")
_WARMUP_RUNS = int(os.environ.get("ORTPROF_WARMUP_RUNS", "5") or 5)
_MODULE = "onnxruntime.capi.onnxruntime_inference_collection"
_ORT_PROFILE = os.environ.get("ORTPROF_ORT_PROFILE") == "1"
_ORT_PROFILE_STOP = "ort-profile.stop"   # written by `ortprof record` when its window closes


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


def _load_core():
    """ortprof/attach/hookcore.py: the recording logic this hook shares with `ortprof.attach`."""
    import importlib.util
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.normpath(os.path.join(here, os.pardir, os.pardir, "attach", "hookcore.py"))
    spec = importlib.util.spec_from_file_location("_ortprof_hookcore", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_core = None    # hookcore, loaded by _install


def _patch(module, recorder):
    _core.patch_session_class(module, recorder, overrides=_overrides(), apply_overrides=_apply_overrides,
                              ending_profile=_ending_profile)


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
    global _core
    if not _HOOK_DIR or not os.path.isdir(_HOOK_DIR):
        return
    _core = _load_core()
    recorder = _core.FileRecorder(_HOOK_DIR, _WARMUP_RUNS)
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
