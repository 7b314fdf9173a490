"""C API uprobes of the native ORT clients the agent follows (C, C++, C#, Java, Node, Rust).

A followed process that maps libonnxruntime.so (Python's onnxruntime wheel links ORT into
its own module and does not: pybind.py times those) gets entry and return uprobes on that
library's C API functions (uprobes.AgentUprobes adds them, ortprof.signals.capi.probes), and its
long-lived perf records their events beside its samples (perfsession.PerfSession
`probe_events`): they are on while a window is, off between windows, like the samples. Each
window's capture (captures.WindowCapiCapture) turns the window's probe events into the runs
signal's `session` and `runs` records, so the window's report has the process's sessions and
latency, and feeds the runs to the latency histogram.

What a window sees is what was recorded in it: a session created in an earlier window is
remembered by its handle (its model and options), a session created before the agent
followed the process, or between windows, is known by its handle only
(`options_known: false`, model "unknown" in the histogram's labels).
"""
from dataclasses import dataclass, field
from typing import Dict, List

from ..signals.capi.sessions import hook_records
from ..signals.capi.spans import CapiCall
from .uprobes import ProbedFile

UNCLAIMED_LIMIT = 16     # creations seen but not yet run, carried from window to window
HANDLES_LIMIT = 4096     # sessions remembered per process (released between windows: never seen going)
CREATE_CALLS = ("CreateSession", "CreateSessionFromArray")
OPTION_CALLS = ("SetIntraOpNumThreads", "SetInterOpNumThreads", "SetSessionExecutionMode",
                "SetSessionGraphOptimizationLevel", "AddSessionConfigEntry", "DisablePerSessionThreads")
# what a session record says about its creation, remembered for later windows
_CREATION_FIELDS = ("tid", "model", "model_inferred", "options", "options_known", "mono", "load_seconds",
                    "new_threads")


@dataclass
class NativeProcess:
    """What the agent knows of one followed native client across its windows."""
    probed: ProbedFile
    sessions: Dict[str, dict] = field(default_factory=dict)   # handle -> its creation, or {} when unknown
    unclaimed: List[CapiCall] = field(default_factory=list)   # creations (and their options' calls) not yet run

    def window_records(self, calls: List[CapiCall], pid: int, thread_starts: Dict[int, float]) -> List[dict]:
        """The runs signal's records of one window's calls. Sessions of earlier windows keep
        what was learnt of them; creations seen (in this window, or earlier and not yet run)
        are tied by order, as `record` ties them, to the handles not seen before, leaving out
        those used before any of them returned (sessions created before the probes saw them)."""
        creations = [call.end_ns for call in self.unclaimed + calls
                     if call.function in CREATE_CALLS and call.end_ns is not None and not call.failed]
        for call in calls:
            handle = call.arguments.get("session")
            if handle and handle not in self.sessions and call.start_ns is not None and (
                    not creations or call.start_ns < min(creations)):
                self.sessions[handle] = {}
        known = [call for call in calls if call.arguments.get("session") in self.sessions]
        fresh = self.unclaimed + [call for call in calls if call.arguments.get("session") not in self.sessions]
        ort_version, library = self.probed.ort_version, self.probed.path
        new = hook_records(fresh, pid, thread_starts, ort_version, library)
        old = hook_records(known, pid, thread_starts, ort_version, library)
        sessions = [record for record in new if record["event"] == "session"]
        offset = len(sessions)
        for record in sessions:
            self.sessions[record["handle"]] = ({key: record[key] for key in _CREATION_FIELDS}
                                               if record["options_known"] else {})
        sessions += [dict(record, session=record["session"] + offset, **self.sessions[record["handle"]])
                     for record in old if record["event"] == "session"]
        runs = [run for record in new if record["event"] == "runs" for run in record["runs"]]
        runs += [[number + offset, *rest] for record in old if record["event"] == "runs"
                 for number, *rest in record["runs"]]
        self._carry_unclaimed(fresh, offset)
        for call in calls:     # a released handle may come back as another session's
            if call.function == "ReleaseSession" and call.end_ns is not None:
                self.sessions.pop(call.arguments.get("session"), None)
        for handle in list(self.sessions)[:max(0, len(self.sessions) - HANDLES_LIMIT)]:
            del self.sessions[handle]      # the oldest first
        if runs:
            sessions.append({"event": "runs", "pid": pid, "source": "capi", "runs": sorted(runs, key=lambda run: run[1])})
        return sessions

    def _carry_unclaimed(self, fresh: List[CapiCall], tied: int) -> None:
        created = [call for call in fresh if call.function in CREATE_CALLS and call.end_ns is not None
                   and not call.failed]
        left = created[tied:][-UNCLAIMED_LIMIT:]
        options = {call.arguments.get("options") for call in left}
        self.unclaimed = sorted(left + [call for call in fresh if call.function in OPTION_CALLS
                                        and call.arguments.get("options") in options],
                                key=lambda call: call.start_ns or 0)


def timed_runs(records: List[dict]) -> List[tuple]:
    """(session, start, duration, tid, kind) of the records' runs, as HookTail hands them out."""
    return [tuple(run) for record in records if record["event"] == "runs" for run in record["runs"]]
