"""`record --pid`'s capture of the pybind signal: a Python process's run() timed by uprobes on its
pybind11 dispatchers, when the startup hook's recording is not attached to it: the attach was
refused or failed (no ptrace, no gdb, an interpreter out of reach), or `--no-attach` chose probes
over injection. Nothing runs inside the process; its sessions are known by identity only (no
options, no model). When the attach succeeded the probes are not added: one source of runs.

The probes are added when the process is followed (before the window opens), recorded by a perf
of their own, and removed when recording ends however it ends (UprobeCapture.stop). The events
become the startup hook's `session` and `runs` records (sessions.hook_records) in
hook/hook-pybind-PID.jsonl, which the runs signal loads with the others.
"""
import os
import time
from typing import Optional, Tuple

from ...errors import EnvironmentProblem, InputError
from ..capi.capture import UprobeCapture
from . import PYBIND_DATA, PYBIND_LOG, PybindRecord

HOOK_FILE = "hook-pybind-{pid}.jsonl"
NO_ATTACH = "--no-attach"
# the attach's statuses (signals.runs.HookCapture) that time run() already
ATTACHED = ("attached", "hooked")


def probing_decision(no_attach: bool, attach_status: Optional[str], is_root: bool,
                     perf: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """(why probe instead of the hook, why not probe): one of the two is None, or both when
    nothing is to be done (the hook times run() already)."""
    if not no_attach and attach_status in ATTACHED:
        return None, None
    why = NO_ATTACH if no_attach else "the startup hook's recording could not be attached"
    if perf is None:
        return why, "uprobes need perf (`ortprof doctor --check uprobes`)"
    if not is_root:
        return why, "uprobes need root (perf probe writes tracefs' uprobe_events; `ortprof doctor --check uprobes`)"
    return why, None


def timed_entry(event: str) -> bool:
    """Whether an event name is the entry of a timed method's dispatcher (py_run__PID, not
    py_run__PID_x0 nor py_run_async__PID)."""
    from ..capi.probes import event_function
    from .sessions import UNTIMED_METHODS
    from .timing import EVENT_PREFIX, EXIT_TAG, _site_of
    function, tag, _ = event_function(event)
    return function.startswith(EVENT_PREFIX) and EXIT_TAG not in tag and _site_of(function)[0] not in UNTIMED_METHODS


class PybindCapture(UprobeCapture):
    data_file = PYBIND_DATA
    log_file = PYBIND_LOG
    process_name = "perf-pybind"
    probes_name = "the pybind11 dispatcher uprobes"

    def __init__(self, recorder, perf_path):
        super().__init__(recorder, perf_path)
        self.record = PybindRecord()
        self.sites = None             # dispatch.DispatchSites, once probed
        self.tag: Optional[str] = None    # the owner's tag in the events' names
        self.decided = False

    def _attach_status(self) -> Optional[str]:
        from ..runs import HookCapture
        hook = next((c for c in self.recorder.captures if isinstance(c, HookCapture)), None)
        return hook.attach_status if hook is not None else "the runs signal is not recorded"

    def follow(self, pid):
        """After the runs signal's follow (SIGNALS order): probe unless the attach times run()."""
        from ..runs import python_ort
        if self.decided or not python_ort(pid):
            return
        self.decided = True
        options = self.recorder.options
        instead, refused = probing_decision(not getattr(options, "attach", True), self._attach_status(),
                                            os.geteuid() == 0, self.perf_path)
        self.record.instead_of_attach = instead
        if instead is None:
            return
        if refused is not None:
            self._give_up(pid, refused)
            return
        self.pid = pid
        self._probe(pid)

    def _probe(self, pid):
        from ...environment import ort_version_of_module
        from ..capi.probes import remove_stale
        from .dispatch import find_run_dispatchers
        from .timing import DispatchProbes
        started = time.monotonic()
        try:
            sites = find_run_dispatchers(pid)
            self.record.find_seconds = round(time.monotonic() - started, 3)
            remove_stale(self.perf_path)
            self.probes = DispatchProbes(self.perf_path)
            self.tag = str(self.probes.owner.pid)
            self.pending += self.probes.add_sites(sites)
            self._record_pending()
        except (InputError, EnvironmentProblem) as problem:
            self._give_up(pid, str(problem))
            return
        self.sites = sites
        self.record.module, self.record.build_id, self.record.layout = \
            sites.module_in_process, sites.build_id, sites.layout
        self.record.methods = sites.methods
        self.record.ort_version = ort_version_of_module(sites.module)[1]
        self.recorder.note(f"run() of process {pid} is timed by uprobes on its pybind11 dispatchers, nothing "
                           f"injected ({self.record.instead_of_attach}): options and models unknown" + (
                               "; without --no-attach ortprof attaches the startup hook's recording, which reads "
                               "them" if self.record.instead_of_attach == NO_ATTACH else ""))

    def _give_up(self, pid, why):
        """No run() timing for this run: the perf first (probes it has open cannot be removed)."""
        self.gave_up = self.record.not_timed = why
        self.recorder.note(f"run() of process {pid} is not timed: {self.record.instead_of_attach}, "
                           f"and the pybind11 dispatchers cannot be probed: {why}")
        for process in self.perfs:
            process.stop()
        self._remove_probes()

    def warm_runs(self) -> Optional[int]:
        return self._hits(timed_entry) if self.perfs else None

    def finish(self):
        if self.perfs and self.sites is not None and self.pid is not None:
            self._write_records(self.sites, self.pid)
        if self.record.instead_of_attach is not None:
            self.recorder.manifest.set_section("pybind", self.record)

    def _write_records(self, sites, pid: int):
        """pybind.data -> the runs signal's records (hook/hook-pybind-PID.jsonl)."""
        import subprocess
        from ..capi.spans import script_lines
        from .sessions import hook_records, timed, untimed_counts
        from .timing import dispatch_events, pair_runs
        try:
            lines = script_lines(self.perf_path, [process.output for process in self.perfs],
                                 str(self.recorder.run.path))
        except (OSError, subprocess.TimeoutExpired) as error:
            self.recorder.note(f"the pybind11 dispatcher uprobe events could not be decoded: {error}")
            return
        spans = [span for span in pair_runs(dispatch_events(lines, self.tag), sites.layout) if span.pid in (None, pid)]
        records = hook_records(spans, pid, self.record.ort_version, self.record.module)
        self.write_hook_records(HOOK_FILE.format(pid=pid), records)
        self.record.calls = len(spans)
        self.record.runs = sum(1 for span in spans if timed(span))
        self.record.sessions = sum(1 for item in records if item["event"] == "session")
        self.record.untimed = untimed_counts(spans)
