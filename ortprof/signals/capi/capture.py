"""`record`'s capture of the C API signal: uprobes on the libonnxruntime.so the process maps,
recorded by a perf of their own from the moment the library is there (so warm-up can be
counted in runs, as the hook does for Python), removed when recording ends however it ends.

A launched native client loads the library after it starts: the capture looks for it in
/proc/PID/maps while the recorder waits for warm-up (`warm_runs`), adds the probes as soon
as it is mapped and counts Run calls from tracefs' uprobe_profile. An attached process
(--pid) gets them when profiling starts. Python's onnxruntime wheel links ORT into its own
module and does not call libonnxruntime.so: such a process has no probes (its runs come from
the hook).
"""
import os
import re
import time
from typing import Callable, Dict, List, Optional

from ...errors import EnvironmentProblem, InputError
from ..base import Capture
from . import CAPI_DATA, CAPI_LOG

HOOK_FILE = "hook-capi-{pid}.jsonl"      # what it writes for the runs signal, beside the hook's own
UPROBE_PROFILE = "/sys/kernel/tracing/uprobe_profile"
_LIBRARY = re.compile(r"(^|/)libonnxruntime\.so(\.\d+)*$")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def ort_library_of(pid) -> Optional[str]:
    """The libonnxruntime.so process `pid` maps, as a path in ortprof's mount namespace (the same
    file, through /proc/PID/root in a container's: maps.reachable_path), or None."""
    from .maps import read_maps, reachable_path
    try:
        mappings = read_maps(pid)
    except (InputError, EnvironmentProblem):
        return None
    for mapping in mappings:
        if "x" in mapping.perms and _LIBRARY.search(mapping.path):
            return reachable_path(pid, mapping)
    return None


def _file_key(path: str):
    """One library file however it is named (its path here, or through /proc/PID/root: another
    mount namespace's file included): its device and inode, or the path when it is gone."""
    try:
        stat = os.stat(path)
    except OSError:
        return path
    return (stat.st_dev, stat.st_ino)


def thread_starts(pid) -> Dict[int, float]:
    """Each thread's start on CLOCK_MONOTONIC (its /proc start time in clock ticks after boot;
    boot time and monotonic time differ by the time the machine was suspended)."""
    boot_minus_mono = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
    starts = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
            starts[int(tid)] = int(fields[19]) / CLOCK_TICKS - boot_minus_mono
        except (OSError, IndexError, ValueError):
            continue
    return starts


class UprobeCapture(Capture):
    """What the uprobe captures share (the C API's, the pybind11 dispatchers'): one probe group
    owned by this ortprof, perf recordings of its events on CLOCK_MONOTONIC (the window's clock),
    probe hits counted from tracefs for warm-up, and the probes removed when recording ends,
    however it ends (stop runs after Ctrl+C, SIGTERM and a failure too)."""
    data_file = CAPI_DATA              # the first perf's output; a later one gets NAME-2.data ...
    log_file = CAPI_LOG
    process_name = "perf-capi"
    probes_name = "the C API uprobes"

    def __init__(self, recorder, perf_path):
        super().__init__(recorder)
        self.perf_path = perf_path
        self.pid = None
        self.probes = None            # probes.Uprobes: the owner's one group
        self.pending: List[str] = []  # events added, not yet recorded by a perf
        self.perfs: List = []         # the perf processes recording them (a later library: one more)
        self.gave_up: Optional[str] = None      # why there are no probes

    def _record_pending(self, system_wide=False):
        """A perf recording the events added since the last one (with -k mono: the window's clock),
        of the followed process or, before it exists, of every process (filtered when read)."""
        from ...recording import profilers
        if not self.pending or (self.pid is None and not system_wide):
            return
        run = self.recorder.run
        suffix = f"-{len(self.perfs) + 1}" if self.perfs else ""
        output = run.file(self.data_file.replace(".data", f"{suffix}.data"))
        log = run.file(self.log_file.replace(".log", f"{suffix}.log"))
        argv = [self.perf_path, "record", "-k", "mono", "-o", str(output),
                *[argument for event in self.pending for argument in ("-e", event)],
                *(["-a"] if system_wide else ["-p", str(self.pid)])]
        process = profilers.ProfilerProcess(f"{self.process_name}{suffix}", argv, str(log), str(output)).start()
        self.pending = []
        self.perfs.append(process)
        process.wait_until_recording()
        if process.early_failure() is not None:
            raise profilers.EnvironmentProblem(f"perf could not record {self.probes_name}: {process.log_tail()}")

    def _hits(self, counted: Callable[[str], bool]) -> int:
        """Hits so far of this owner's probes whose event name is `counted` (tracefs' per-probe counter)."""
        if self.probes is None:
            return 0
        events = {event.split(":", 1)[1] for event in self.probes.events if counted(event.split(":", 1)[1])}
        hits = 0
        try:
            with open(UPROBE_PROFILE) as stream:
                for line in stream:
                    parts = line.split()
                    if len(parts) == 3 and parts[1].split(":")[-1] in events:
                        hits += int(parts[2])
        except (OSError, ValueError):
            return 0
        return hits

    def write_hook_records(self, name: str, records: List[dict]) -> None:
        """The runs signal's records made of the probes' events, beside the hook's own (hook/NAME)."""
        import json
        from ..runs import HOOK_DIR
        with open(self.recorder.run.file(HOOK_DIR) / name, "w") as stream:
            for item in records:
                stream.write(json.dumps(item) + "\n")

    def processes(self):
        return {process.name: process for process in self.perfs}

    def stop(self):
        try:
            super().stop()
        finally:
            self._remove_probes()

    def _remove_probes(self):
        if self.probes is not None:
            probes, self.probes = self.probes, None
            try:
                probes.remove()
            except EnvironmentProblem as problem:
                self.recorder.note(f"{self.probes_name} could not be removed: {problem} "
                                   "(the next `ortprof record` or `ortprof doctor` removes them)")


class CapiCapture(UprobeCapture):
    def __init__(self, recorder, perf_path):
        super().__init__(recorder, perf_path)
        self.tables: Dict[object, object] = {}  # file identity (_file_key) -> its OrtApiTable
        self.paths: List[str] = []              # the libraries probed, as given to perf probe
        self.thread_starts: Dict[int, float] = {}

    @property
    def table(self):
        return next(iter(self.tables.values()), None)

    @property
    def library(self) -> Optional[str]:
        return self.paths[0] if self.paths else None

    def before_workload(self):
        """A launched command: probe the libraries it will load, and record them machine-wide
        before it runs (its session is created within milliseconds of loading the library,
        before a perf attached to the new process would be recording); only the workload's
        events are kept."""
        from .candidates import candidate_libraries
        options = self.recorder.options
        if options.pid is None:
            for library in candidate_libraries(options.command):
                self._probe(library)
            try:
                self._record_pending(system_wide=True)
            except EnvironmentProblem as problem:
                self._give_up(str(problem))

    def follow(self, pid):
        self.pid = pid
        self._record_pending()

    def warm_runs(self) -> Optional[int]:
        """Run calls seen so far (None: no probes yet); probes a library as soon as it is mapped."""
        if self.pid is not None and self.gave_up is None:
            library = ort_library_of(self.pid)
            if library is not None and _file_key(library) not in self.tables:
                self._probe(library)
                self._record_pending()
        return self._runs_seen() if self.perfs else None

    def start(self, pid):
        self.pid = pid
        if self.gave_up is not None:
            return
        library = ort_library_of(pid)
        if library is None and not self.tables:
            self.gave_up = ("the process does not map libonnxruntime.so (Python's onnxruntime links ORT "
                            "into its own module: its runs come from the hook or its pybind11 dispatchers)")
            return
        if library is not None and _file_key(library) not in self.tables:
            self._probe(library)
        self._record_pending()

    def _probe(self, library):
        from .probes import Uprobes, remove_stale
        from ...symbols.ortapi import read_ort_api
        key = _file_key(library)
        try:
            table = read_ort_api(library)
            if self.probes is None:
                remove_stale(self.perf_path)
                self.probes = Uprobes(self.perf_path)
            self.pending += self.probes.add(library, table=table, library_tag=f"l{len(self.tables)}")
        except (InputError, EnvironmentProblem) as problem:
            if not self.perfs:
                self._give_up(str(problem))
            else:     # the libraries already probed go on being recorded
                self.recorder.note(f"C API calls of {library} are not timed: {problem}")
            return
        self.tables[key] = table
        self.paths.append(library)
        self.recorder.note(f"C API calls of {library} (ORT {table.ort_version}) are timed by uprobes")

    def _give_up(self, why):
        """No C API timing for this run: its perf first (probes it has open cannot be removed)."""
        self.gave_up = why
        self.recorder.note(f"C API calls are not timed: {why}")
        for process in self.perfs:
            process.stop()
        self._remove_probes()

    def _runs_seen(self) -> int:
        """Hits of the Run probes' entries so far."""
        from .probes import RETURN_SUFFIX
        return self._hits(lambda event: event.startswith("Run") and RETURN_SUFFIX not in event)

    def window_closing(self):
        if self.pid is not None:
            self.thread_starts = thread_starts(self.pid)   # while the process lives

    def finish(self):
        from . import CapiRecord
        record = CapiRecord(library=self.library, ort_version=self.table.ort_version if self.table else None,
                            api_version=self.table.api_version if self.table else None,
                            build_id=self.table.build_id if self.table else None, not_timed=self.gave_up)
        if self.perfs:
            record.calls, record.runs, record.sessions = self._write_records()
        self.recorder.manifest.set_section("capi", record)

    def _write_records(self):
        """capi.data -> the runs signal's records (hook/hook-capi-PID.jsonl); (calls, runs, sessions)."""
        import subprocess
        from .sessions import TIMED_KINDS, hook_records
        from .spans import read_calls
        if self.pid is None:
            return 0, 0, 0
        try:
            calls = read_calls(self.perf_path, [process.output for process in self.perfs], str(self.recorder.run.path),
                               self.pid)
        except (OSError, subprocess.TimeoutExpired) as error:
            self.recorder.note(f"the C API uprobe events could not be decoded: {error}")
            return 0, 0, 0
        records = hook_records(calls, self.pid, self.thread_starts,
                               self.table.ort_version if self.table else None, self.library or "")
        self.write_hook_records(HOOK_FILE.format(pid=self.pid), records)
        runs = sum(1 for call in calls if call.function in TIMED_KINDS and call.duration_ns is not None)
        return len(calls), runs, sum(1 for item in records if item["event"] == "session")
