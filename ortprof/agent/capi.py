"""C API uprobes of the native ORT clients the agent follows (C, C++, C#, Java, Node, Rust).

A followed process that maps libonnxruntime.so (Python's onnxruntime wheel links ORT into
its own module and does not) gets entry and return uprobes on that library's C API
functions (ortprof.signals.capi.probes), and its long-lived perf records their events
beside its samples (perfsession.PerfSession `probe_events`): they are on while a window is,
off between windows, like the samples. Each window's capture (captures.WindowCapiCapture)
turns the window's probe events into the runs signal's `session` and `runs` records, so the
window's report has the process's sessions and latency, and feeds the runs to the latency
histogram.

The whole agent is one ortprof process: one probe group (named by the agent's pid and
start time), one library tag per library file (`l0`, `l1`, ...). A library's probes are
added when the first followed process maps it and removed when no followed process does
any more; the group goes when the agent stops (SIGTERM and Ctrl+C end the loop, which
removes it); a group left by a killed agent (or `record`) is removed at the next start.

What a window sees is what was recorded in it: a session created in an earlier window is
remembered by its handle (its model and options), a session created before the agent
followed the process, or between windows, is known by its handle only
(`options_known: false`, model "unknown" in the histogram's label).
"""
import os
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from ..errors import EnvironmentProblem, InputError
from ..signals.capi.capture import ort_library_of
from ..signals.capi.probes import RETURN_SUFFIX, TAG_SEPARATOR, Uprobes, remove_stale
from ..signals.capi.sessions import hook_records
from ..signals.capi.spans import CapiCall

UNKNOWN_MODEL = "unknown"
UNCLAIMED_LIMIT = 16     # creations seen but not yet run, carried from window to window
HANDLES_LIMIT = 4096     # sessions remembered per process (released between windows: never seen going)
PERF_PROBE_TIMEOUT = 60
CREATE_CALLS = ("CreateSession", "CreateSessionFromArray")
OPTION_CALLS = ("SetIntraOpNumThreads", "SetInterOpNumThreads", "SetSessionExecutionMode",
                "SetSessionGraphOptimizationLevel", "AddSessionConfigEntry", "DisablePerSessionThreads")
# what a session record says about its creation, remembered for later windows
_CREATION_FIELDS = ("tid", "model", "model_inferred", "options", "options_known", "mono", "load_seconds",
                    "new_threads")


@dataclass
class ProbedLibrary:
    path: str                   # the library file as the agent sees it (real path)
    tag: str                    # library tag in the event names
    table: object               # its ortprof.symbols.ortapi.OrtApiTable
    events: List[str]           # GROUP:EVENT of its entry and return probes
    users: Set[tuple] = field(default_factory=set)    # keys of the followed processes mapping it


@dataclass
class NativeProcess:
    """What the agent knows of one followed native client across its windows."""
    library: ProbedLibrary
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
        ort_version, library = self.library.table.ort_version, self.library.path
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

    def labels(self, records: List[dict]) -> Dict[int, str]:
        """Session number -> the histogram's session label: its model's file name and handle."""
        labels = {}
        for record in records:
            if record["event"] == "session":
                model = record.get("model")
                labels[record["session"]] = f"{os.path.basename(model) if model else UNKNOWN_MODEL}@{record['handle']}"
        return labels


def timed_runs(records: List[dict]) -> List[tuple]:
    """(session, start, duration, tid, kind) of the records' runs, as HookTail hands them out."""
    return [tuple(run) for record in records if record["event"] == "runs" for run in record["runs"]]


class AgentUprobes:
    """The agent's probe group: libraries probed, the processes using each, per-process memory."""

    def __init__(self, perf: str, log):
        self.perf, self.log = perf, log
        self.probes: Optional[Uprobes] = None
        self.libraries: Dict[Tuple[int, int], ProbedLibrary] = {}   # (st_dev, st_ino) -> probed library
        self.processes: Dict[tuple, NativeProcess] = {}             # target key -> what is known of it
        self.failed: Dict[Tuple[int, int], str] = {}                # library file -> why it has no probes
        self._next_tag = 0

    def start(self) -> None:
        """Remove the probe groups of dead ortprof processes (a killed agent's): their breakpoints
        stay in the processes they probe, and their event names could clash with this agent's.
        A failure is one line; whether probes can be added here is seen when one is needed."""
        try:
            removed = remove_stale(self.perf)
        except EnvironmentProblem as problem:
            self.log.warning("stale-uprobes-not-removed", reason=str(problem))
            return
        if removed:
            self.log.info("stale-uprobes-removed", groups=",".join(removed))

    def events_for(self, target) -> List[str]:
        """The probe events the process's perf records: those of the libonnxruntime.so it maps,
        probed now if it is the first followed process to map it; none for a process that does
        not map one (Python) or when the probes cannot be added (logged once)."""
        library = ort_library_of(target.pid)
        key = None
        if library is not None:
            try:
                stat = os.stat(library)
                key = (stat.st_dev, stat.st_ino)
            except OSError:
                pass
        probed = self.libraries.get(key) if key is not None else None
        known = self.processes.get(target.key)
        if known is not None and known.library is probed:
            return list(probed.events)       # its perf restarted: what was learnt of it stays
        if probed is None and key is not None:
            probed = self._probe(library, key, target)
        if probed is not None:
            probed.users.add(target.key)     # before the release: its library stays probed
        self.release(target.key)
        if probed is None:
            return []
        self.processes[target.key] = NativeProcess(probed)
        return list(probed.events)

    def not_timed(self, target) -> Optional[str]:
        """Why a process that maps libonnxruntime.so has no probes (None: it has, or it maps none)."""
        library = ort_library_of(target.pid)
        if library is None or target.key in self.processes:
            return None
        try:
            stat = os.stat(library)
        except OSError:
            return "its libonnxruntime.so cannot be read"
        return self.failed.get((stat.st_dev, stat.st_ino))

    def _probe(self, library: str, key, target) -> Optional[ProbedLibrary]:
        from ..symbols.ortapi import read_ort_api
        if key in self.failed:
            return None
        try:
            table = read_ort_api(library)
            if self.probes is None:
                self.probes = Uprobes(self.perf)
            tag = f"l{self._next_tag}"
            self._next_tag += 1
            events = self.probes.add(library, table=table, library_tag=tag)
        except (InputError, EnvironmentProblem) as problem:
            why = self.failed[key] = str(problem)
            self.log.warning("capi-not-timed", pid=target.pid, service=target.service, library=library,
                             reason=f"C API calls are not timed: {why}",
                             fix="ortprof doctor --check uprobes")
            return None
        probed = ProbedLibrary(os.path.realpath(library), tag, table, events)
        self.libraries[key] = probed
        self.log.info("capi-probed", pid=target.pid, library=probed.path, ort_version=table.ort_version,
                      events=len(events))
        return probed

    def process(self, target) -> Optional[NativeProcess]:
        return self.processes.get(target.key)

    def release(self, key) -> None:
        """Process `key` is no longer followed (or its perf is restarted): a library no followed
        process maps any more loses its probes (its perf must be stopped first: events in use
        cannot be deleted)."""
        native = self.processes.pop(key, None)
        if native is None:
            return
        library = native.library
        library.users.discard(key)
        if library.users:
            return
        for file_key, probed in list(self.libraries.items()):
            if probed is library:
                del self.libraries[file_key]
        try:
            self._remove_library(library)
        except EnvironmentProblem as problem:
            self.log.warning("uprobes-not-removed", library=library.path, reason=str(problem))

    def _remove_library(self, library: ProbedLibrary) -> None:
        probes = self.probes
        if probes is None:
            return
        if not self.libraries:      # the last library: the whole group
            self.close()
            return
        suffix = f"{TAG_SEPARATOR}{probes.owner.pid}_{library.tag}"
        try:
            done = subprocess.run([self.perf, "probe", "-d", f"{probes.group}:*{suffix}",
                                   "-d", f"{probes.group}:*{suffix}{RETURN_SUFFIX}"],
                                  capture_output=True, text=True, timeout=PERF_PROBE_TIMEOUT, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise EnvironmentProblem(f"perf probe -d did not run: {error}")
        if done.returncode != 0 and "does not hit any event" not in done.stderr:
            raise EnvironmentProblem(f"perf probe -d {probes.group}:*{suffix} failed: {done.stderr.strip()[-300:]}")
        probes.events = [event for event in probes.events if event not in library.events]

    def close(self) -> None:
        """Remove the agent's probe group (every library's probes); the followed processes'
        perf must be stopped first."""
        probes, self.probes = self.probes, None
        self.libraries.clear()
        self.processes.clear()
        if probes is not None:
            try:
                probes.remove()
            except EnvironmentProblem as problem:
                self.log.error("uprobes-not-removed", reason=str(problem))
