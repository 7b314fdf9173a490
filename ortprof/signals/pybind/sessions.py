"""Dispatcher run spans -> the records the startup hook writes (`session`, `runs`), so a Python
process timed by the pybind11 dispatcher probes loads, reports and diffs like one with the hook.

What the probes see and what they cannot:
- A session is known by its pybind `InferenceSession` object (`self`, id(session._sess) in the
  process): its identity while it lives, shown as a handle ("0x7f..."). Nothing is read from the
  session: no model, providers or options (`options_known: false`), unless the caller knows
  them by the same identity (`known`).
- Runs are the spans that returned (entry and exit seen); one that raised, did not convert its
  arguments, or was cut by the start or the end of the recording is not a run. run_async's span
  is its submission only: counted, never timed.
- No creation is seen: no creating thread, load time or pool threads (`new_threads` null).
"""
from typing import Dict, List, Mapping, MutableMapping, Optional, Sequence

from .timing import RETURNED, RunSpan

SOURCE = "pybind"
UNTIMED_METHODS = ("run_async",)      # its return is not the end of the run
# What a session record of the probes cannot tell (named in its `unknown`, as the attach does)
UNKNOWN = ["model", "providers", "options", "tid", "load_seconds", "mono", "new_threads"]
# The fields a `known` entry may fill in
KNOWN_FIELDS = ("model", "providers", "ort_version", "options", "options_known", "tid", "mono", "load_seconds",
                "new_threads")


def handle_of(session: int) -> str:
    """The session's identity as the report shows it (the pybind object's address)."""
    return f"0x{session:x}"


def timed(span: RunSpan) -> bool:
    return (span.outcome == RETURNED and span.session is not None and span.duration_ns is not None
            and span.method not in UNTIMED_METHODS)


def session_numbers(spans: Sequence[RunSpan], numbers: Optional[MutableMapping[int, int]] = None) -> Dict[int, int]:
    """`self` id -> session number, in the order the sessions first ran; ids already in `numbers`
    keep theirs (a caller following a process across windows passes the same mapping, which is
    extended in place)."""
    numbers = numbers if numbers is not None else {}
    for span in spans:
        if span.session is not None and span.session not in numbers and span.outcome == RETURNED:
            numbers[span.session] = max(numbers.values(), default=0) + 1
    return dict(numbers)


def hook_records(spans: Sequence[RunSpan], pid: int, ort_version: Optional[str] = None,
                 module: Optional[str] = None, known: Optional[Mapping[int, dict]] = None,
                 numbers: Optional[MutableMapping[int, int]] = None) -> List[dict]:
    """`session` records (one per `self` that ran in `spans`) and one `runs` record, as the startup
    hook writes them (start and duration in seconds on CLOCK_MONOTONIC: perf -k mono).

    `ort_version` and `module` (the onnxruntime_pybind11_state file, as the process maps it) go
    into every session record; `known` maps a `self` id to what another source knows of that
    session (KNOWN_FIELDS: model, options, ...); `numbers` keeps session numbers across calls."""
    known = known or {}
    by_session = session_numbers(spans, numbers)
    ran = {span.session for span in spans if span.outcome == RETURNED}
    records: List[dict] = []
    for session, number in sorted(by_session.items(), key=lambda item: item[1]):
        if session not in ran:
            continue
        record = {"event": "session", "session": number, "pid": pid, "source": SOURCE, "handle": handle_of(session),
                  "tid": None, "model": None, "providers": None, "ort_version": ort_version, "ort_file": module,
                  "options": {}, "options_known": False, "mono": None, "load_seconds": None, "new_threads": None}
        extra = {key: value for key, value in (known.get(session) or {}).items() if key in KNOWN_FIELDS}
        record.update(extra)
        record["unknown"] = [name for name in UNKNOWN if record.get(name) in (None, {})
                             and not (name == "options" and record.get("options_known"))]
        records.append(record)
    runs = [[by_session[span.session], span.start_ns / 1e9, span.duration_ns / 1e9, span.tid, span.method]
            for span in spans if timed(span) and span.session is not None and span.start_ns is not None
            and span.duration_ns is not None]
    if runs:
        records.append({"event": "runs", "pid": pid, "source": SOURCE, "runs": runs})
    return records


def known_from_hook_records(records: Sequence[dict]) -> Dict[int, dict]:
    """`self` id -> the session record the startup hook or an attach wrote of it (their `handle`
    is the same pybind object's address), for hook_records' `known`."""
    known: Dict[int, dict] = {}
    for record in records:
        handle = record.get("handle")
        if record.get("event") == "session" and isinstance(handle, str) and handle.startswith("0x"):
            known[int(handle, 16)] = record
    return known


def untimed_counts(spans: Sequence[RunSpan]) -> Dict[str, int]:
    """Calls seen but not timed, by why: run_async submissions, runs that raised, calls whose
    arguments did not convert, runs cut by the recording's start or end."""
    counts: Dict[str, int] = {}
    for span in spans:
        if timed(span):
            continue
        why = "run_async" if span.method in UNTIMED_METHODS and span.outcome == RETURNED else span.outcome
        counts[why] = counts.get(why, 0) + 1
    return counts
