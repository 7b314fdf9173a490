"""C API calls -> the same records the startup hook writes (`session`, `runs`), so a native
client's sessions, options and per-run latency load, report, diff and export exactly as a
Python workload's do.

What the probes see and what they cannot:
- A session is known by its handle (the OrtSession* its Run calls pass). CreateSession's
  handle is an output argument the return probe cannot read, so a handle is tied to the
  model path of a CreateSession by order: the i-th handle to be used in a Run is the i-th
  session created (exact with one session; `model_inferred` says when it is by order).
  Sessions created before the probes were added have no model and no options.
- Options are those set through the C API on the options object a CreateSession then
  received (SetIntraOpNumThreads, AddSessionConfigEntry, ...); a default left alone is not
  a call, so it is absent, not "default".
- Workers: the threads that started while its CreateSession ran (thread start times from
  /proc, 10 ms resolution), as the hook's `new_threads`.
- Run and RunWithBinding are timed; RunAsync is counted only (its return is not the end of
  the run).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .spans import CapiCall

TIMED_KINDS = {"Run": "run", "RunWithBinding": "run_with_binding"}
SESSION_CALLS = ("Run", "RunWithBinding", "RunAsync", "ReleaseSession")
_OPTION_SETTERS = {"SetIntraOpNumThreads": ("intra_op_num_threads", "threads"),
                   "SetInterOpNumThreads": ("inter_op_num_threads", "threads"),
                   "SetSessionExecutionMode": ("execution_mode", "mode"),
                   "SetSessionGraphOptimizationLevel": ("graph_optimization_level", "level")}
_EXECUTION_MODES = {"0": "ORT_SEQUENTIAL", "1": "ORT_PARALLEL"}
_OPTIMIZATION_LEVELS = {"0": "ORT_DISABLE_ALL", "1": "ORT_ENABLE_BASIC", "2": "ORT_ENABLE_EXTENDED",
                        "99": "ORT_ENABLE_ALL"}


@dataclass
class NativeSession:
    handle: str
    number: int
    created: Optional[CapiCall] = None       # its CreateSession, when the probes saw it
    options: Dict[str, object] = field(default_factory=dict)
    new_threads: List[int] = field(default_factory=list)
    model_inferred: bool = False


def _options_of(calls: List[CapiCall], handle: Optional[str], before_ns: int) -> Dict[str, object]:
    """What the C API set on options object `handle` before `before_ns`, in the hook's shape."""
    options: Dict[str, object] = {}
    config: Dict[str, str] = {}
    disabled_per_session_threads = False
    for call in calls:
        if handle is None or call.arguments.get("options") != handle or call.failed:
            continue
        if call.start_ns is None or call.start_ns > before_ns:
            continue
        if call.function in _OPTION_SETTERS:
            name, argument = _OPTION_SETTERS[call.function]
            value = call.arguments.get(argument)
            if name == "execution_mode":
                options[name] = _EXECUTION_MODES.get(str(value), value)
            elif name == "graph_optimization_level":
                options[name] = _OPTIMIZATION_LEVELS.get(str(value), value)
            else:
                options[name] = int(value) if value is not None and value.lstrip("-").isdigit() else value
        elif call.function == "AddSessionConfigEntry" and "key" in call.arguments:
            config[call.arguments["key"]] = call.arguments.get("value", "")
        elif call.function == "DisablePerSessionThreads":
            disabled_per_session_threads = True
    options["config"] = dict(sorted(config.items()))
    if disabled_per_session_threads:
        options["use_per_session_threads"] = False
    return options


def native_sessions(calls: List[CapiCall], thread_starts: Dict[int, float]) -> List[NativeSession]:
    """The sessions the calls name, in the order their handles were first used."""
    handles: List[str] = []
    for call in calls:
        handle = call.arguments.get("session")
        if call.function in SESSION_CALLS and handle and handle not in handles:
            handles.append(handle)
    created = [call for call in calls if call.function in ("CreateSession", "CreateSessionFromArray")
               and call.end_ns is not None and not call.failed]
    sessions = []
    for number, handle in enumerate(handles, 1):
        session = NativeSession(handle, number)
        if number <= len(created):
            session.created = created[number - 1]
            session.model_inferred = len(created) > 1 or len(handles) > 1
            start_ns = session.created.start_ns or 0
            session.options = _options_of(calls, session.created.arguments.get("options"), start_ns)
            begin, end = start_ns / 1e9 - 0.01, (session.created.end_ns or start_ns) / 1e9 + 0.01
            session.new_threads = sorted(tid for tid, started in thread_starts.items() if begin <= started <= end)
        sessions.append(session)
    return sessions


def hook_records(calls: List[CapiCall], pid: int, thread_starts: Dict[int, float], ort_version: Optional[str],
                 library: str) -> List[dict]:
    """`session` and `runs` records, as the startup hook writes them (times on CLOCK_MONOTONIC: perf -k mono)."""
    sessions = native_sessions(calls, thread_starts)
    number_of = {session.handle: session.number for session in sessions}
    records: List[dict] = []
    for session in sessions:
        created = session.created
        model = None
        if created is not None:
            model = created.arguments.get("model") or (
                f"<{int(created.arguments['model_bytes'], 0)} bytes>" if "model_bytes" in created.arguments else None)
        records.append({
            "event": "session", "session": session.number, "pid": pid, "source": "capi",
            "handle": session.handle, "tid": created.tid if created else None, "model": model,
            "model_inferred": session.model_inferred if created else None,
            "providers": None, "ort_version": ort_version, "ort_file": library,
            "options": session.options, "options_known": created is not None,
            "mono": created.start_ns / 1e9 if created and created.start_ns else None,
            "load_seconds": created.duration_ns / 1e9 if created and created.duration_ns else None,
            "new_threads": session.new_threads})
    runs = [[number_of[call.arguments["session"]], (call.start_ns or 0) / 1e9, (call.duration_ns or 0) / 1e9, call.tid,
             TIMED_KINDS[call.function]]
            for call in calls
            if call.function in TIMED_KINDS and call.duration_ns is not None and call.arguments.get("session") in number_of]
    if runs:
        records.append({"event": "runs", "pid": pid, "source": "capi", "runs": runs})
    return records
