"""The agent's uprobes: one probe group for the whole agent, one tag per probed file.

Two kinds of file are probed, each timing `run()` of the followed processes that map it:

- `libonnxruntime.so` (native C API clients: C, C++, C#, Java, Node, Rust): entry and return
  probes on its C API functions (ortprof.signals.capi.probes), read per window by capi.py;
- the Python wheel's `onnxruntime_pybind11_state` module (Python processes not launched with
  the startup hook and not attached): entry and `ret` probes on InferenceSession's run
  dispatchers (ortprof.signals.pybind.timing), read per window by pybind.py. The module links
  ORT in statically, so a Python process never calls libonnxruntime.so.

A file's probes are added when the first followed process that needs them is found (its events
go to that process's long-lived perf: perfsession.PerfSession `probe_events`) and removed when
no followed process uses them any more (its perf is stopped first: events in use cannot be
deleted); the group goes when the agent stops; a group a killed agent left is removed at the
next start. A file is one file however it is named (device and inode): a container's, reached
through /proc/PID/root, is probed in the process's mount namespace (probes.probe_target).
"""
import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from ..errors import EnvironmentProblem, InputError
from ..signals.capi.capture import ort_library_of
from ..signals.capi.probes import RETURN_SUFFIX, TAG_SEPARATOR, Uprobes, remove_stale

CAPI = "capi"
PYBIND = "pybind"
PERF_PROBE_TIMEOUT = 60
_PYBIND_MODULE = re.compile(r"(^|/)onnxruntime_pybind11_state[^/]*\.so$")


@dataclass
class ProbedFile:
    path: str                   # the file as the agent reaches it (through /proc/PID/root for a container's)
    tag: str                    # file tag in the event names
    table: object = None        # capi: its ortprof.symbols.ortapi.OrtApiTable
    events: List[str] = field(default_factory=list)   # GROUP:EVENT of its probes
    kind: str = CAPI
    sites: object = None        # pybind: its ortprof.signals.pybind.dispatch.DispatchSites (file offsets)
    ort_version: Optional[str] = None
    event_tag: Optional[str] = None                   # the tag in its events' names (owner pid, file tag)
    users: Set[tuple] = field(default_factory=set)    # keys of the followed processes recording its events

    def __post_init__(self):
        if self.ort_version is None and self.table is not None:
            self.ort_version = getattr(self.table, "ort_version", None)


def _file_key(path: str) -> Optional[Tuple[int, int]]:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def pybind_module_of(pid: int) -> Optional[str]:
    """The onnxruntime_pybind11_state module process `pid` maps, as a path the agent can open
    (through /proc/PID/root: a container's file too), or None."""
    try:
        with open(f"/proc/{pid}/maps") as stream:
            for line in stream:
                parts = line.split(None, 5)
                if len(parts) == 6 and "x" in parts[1] and _PYBIND_MODULE.search(parts[5].strip()):
                    return f"/proc/{pid}/root{parts[5].strip()}"
    except OSError:
        return None
    return None


class AgentUprobes:
    """The agent's probe group: the files probed, the processes recording each, per-process memory
    (capi.NativeProcess, pybind.PythonProcess)."""

    def __init__(self, perf: str, log):
        self.perf, self.log = perf, log
        self.probes: Optional[Uprobes] = None
        self.files: Dict[Tuple[int, int], ProbedFile] = {}    # (st_dev, st_ino) -> probed file
        self.processes: Dict[tuple, object] = {}              # target key -> what is known of it
        self.python: Dict[tuple, bool] = {}                   # target key -> whether its Python runs are probed
        self.failed: Dict[Tuple[int, int], str] = {}          # file -> why it has no probes
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

    # -- which file a process needs -------------------------------------------------------------
    def _wanted(self, target, python: bool) -> Tuple[Optional[str], Optional[str]]:
        """(kind, path) of the file whose probes time `target`'s runs: its pybind module when its
        Python runs are to be probed, else the libonnxruntime.so it maps; (None, None) for none."""
        if python:
            module = pybind_module_of(target.pid)
            if module is not None:
                return PYBIND, module
        library = ort_library_of(target.pid)
        return (CAPI, library) if library is not None else (None, None)

    def keeps(self, target, python: bool) -> bool:
        """Whether the process's perf records the probes it should (False: it needs a new perf,
        e.g. its Python runs were probed and it is now attached, or the other way round)."""
        return self.python.get(target.key, python) == python

    def events_for(self, target, python: bool = True) -> List[str]:
        """The probe events the process's perf is to record, the file probed now if it is the first
        followed process to need it; none when no file is to be probed or its probes cannot be
        added (logged once per file). `python`: whether a Python process's run() is probed (not
        when the startup hook or an attach times it)."""
        kind, path = self._wanted(target, python)
        key = _file_key(path) if path is not None else None
        probed = self.files.get(key) if key is not None else None
        known = self.processes.get(target.key)
        self.python[target.key] = python
        if known is not None and probed is not None and known.probed is probed:
            return list(probed.events)       # its perf restarted: what was learnt of it stays
        if probed is None and key is not None:
            probed = self._probe(kind, path, key, target)
        if probed is not None:
            probed.users.add(target.key)     # before the release: its file stays probed
        self.release(target.key, forget=False)
        if probed is None:
            return []
        self.processes[target.key] = self._follower(probed)
        return list(probed.events)

    @staticmethod
    def _follower(probed: ProbedFile):
        from .capi import NativeProcess
        from .pybind import PythonProcess
        return NativeProcess(probed) if probed.kind == CAPI else PythonProcess(probed)

    def not_timed(self, target) -> Tuple[Optional[str], Optional[str]]:
        """(kind, why) of a process whose runs were to be probed and are not; (None, None) when it
        has its probes or none were to be added."""
        if target.key in self.processes:
            return None, None
        kind, path = self._wanted(target, self.python.get(target.key, True))
        if path is None:
            return None, None
        key = _file_key(path)
        if key is None:
            return kind, f"its {os.path.basename(path)} cannot be read"
        why = self.failed.get(key)
        return (kind, why) if why else (None, None)

    def _probe(self, kind: str, path: str, key, target) -> Optional[ProbedFile]:
        if key in self.failed:
            return None
        try:
            if self.probes is None:
                self.probes = Uprobes(self.perf)
            tag = f"{'l' if kind == CAPI else 'm'}{self._next_tag}"
            self._next_tag += 1
            probed = self._add(kind, path, tag, target)
        except (InputError, EnvironmentProblem) as problem:
            why = self.failed[key] = str(problem)
            what = "C API calls" if kind == CAPI else "Python run() calls"
            self.log.warning(f"{kind}-not-timed", pid=target.pid, service=target.service, file=path,
                             reason=f"{what} are not timed: {why}", fix="ortprof doctor --check uprobes")
            return None
        self.files[key] = probed
        self.log.info(f"{kind}-probed", pid=target.pid, file=probed.path, ort_version=probed.ort_version,
                      events=len(probed.events))
        return probed

    def _add(self, kind: str, path: str, tag: str, target) -> ProbedFile:
        if kind == CAPI:
            from ..symbols.ortapi import read_ort_api
            table = read_ort_api(path)
            return ProbedFile(path, tag, table, self.probes.add(path, table=table, library_tag=tag), CAPI,
                              event_tag=self._tag(tag))
        from ..signals.pybind.dispatch import find_run_dispatchers
        from ..signals.pybind.timing import probe_definitions
        sites = find_run_dispatchers(target.pid)     # per build-id: the memory scan once, then its cache
        definitions = probe_definitions(self.probes.group, self._tag(tag), sites)
        return ProbedFile(sites.module, tag, None, self.probes._add(sites.module, definitions), PYBIND, sites,
                          target.ort_version, self._tag(tag))

    def _tag(self, tag: str) -> str:
        return f"{self.probes.owner.pid}_{tag}"

    def process(self, target):
        return self.processes.get(target.key)

    # -- removal ------------------------------------------------------------------------------------
    def release(self, key, forget: bool = True) -> None:
        """Process `key` no longer records its file's events (it is gone, or its perf is being
        restarted): a file no followed process records any more loses its probes (the perf must be
        stopped first: events in use cannot be deleted)."""
        if forget:
            self.python.pop(key, None)
        follower = self.processes.pop(key, None)
        if follower is None:
            return
        probed = follower.probed
        probed.users.discard(key)
        if probed.users:
            return
        for file_key, other in list(self.files.items()):
            if other is probed:
                del self.files[file_key]
        try:
            self._remove_file(probed)
        except EnvironmentProblem as problem:
            self.log.warning("uprobes-not-removed", file=probed.path, reason=str(problem))

    def _remove_file(self, probed: ProbedFile) -> None:
        probes = self.probes
        if probes is None:
            return
        if not self.files:      # the last file: the whole group
            self.close()
            return
        suffix = f"{TAG_SEPARATOR}{self._tag(probed.tag)}"
        # entries, C API returns (EVENT__return), dispatcher exits (EVENT_x0 ...)
        patterns = (suffix, f"{suffix}{RETURN_SUFFIX}", f"{suffix}_x*")
        arguments = [argument for pattern in patterns for argument in ("-d", f"{probes.group}:*{pattern}")]
        try:
            done = subprocess.run([self.perf, "probe", *arguments], capture_output=True, text=True,
                                  timeout=PERF_PROBE_TIMEOUT, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise EnvironmentProblem(f"perf probe -d did not run: {error}")
        if done.returncode != 0 and "does not hit any event" not in done.stderr:
            raise EnvironmentProblem(f"perf probe -d {probes.group}:*{suffix} failed: {done.stderr.strip()[-300:]}")
        probes.events = [event for event in probes.events if event not in probed.events]

    def close(self) -> None:
        """Remove the agent's probe group (every file's probes); the followed processes' perf must
        be stopped first."""
        probes, self.probes = self.probes, None
        self.files.clear()
        self.processes.clear()
        if probes is not None:
            try:
                probes.remove()
            except EnvironmentProblem as problem:
                self.log.error("uprobes-not-removed", reason=str(problem))
