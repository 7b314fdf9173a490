"""Recording the scheduler's view of the process in the window, and reading it back.

The scheduler probes (bpf.py) are part of the one bpftrace program that also counts futex
calls (futex/bpf.py): they need to know whether a thread that leaves its CPU is in a futex
wait, which the futex part already tracks, and one program starts once, before the
workload. When futex calls are counted in BPF the futex capture starts the program with
these probes in it; otherwise this capture starts it itself (same files, same marks).

Besides the program's output, the capture reads each thread's /proc schedstat (time on
CPU, time waiting on a run queue) at the window's open and close: a thread that never
left its CPU prints nothing, and the figures are the kernel's own account to check
against.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..base import Capture

SCHED_METHOD = "bpftrace"


@dataclass
class SchedRecord:
    """run.json "sched": how scheduler events were recorded, or why not."""
    method: Optional[str] = None            # "bpftrace"; None: not recorded (reason says why)
    reason: Optional[str] = None
    fix: Optional[str] = None
    output: Optional[str] = None            # the run-directory file holding the program's output
    with_futex_counters: bool = False       # one program with the futex counters (futex-bpf.*)
    period_timer: bool = False              # the cgroup's quota refills are seen (throttled periods end there)
    events: Dict[str, int] = field(default_factory=dict)   # episodes, holder_stretches, period_timer, lost
    lost_events: int = 0
    schedstat_open: Dict[str, List[int]] = field(default_factory=dict)    # tid -> /proc schedstat: on-CPU ns,
    schedstat_close: Dict[str, List[int]] = field(default_factory=dict)   # run-queue wait ns, timeslices


def schedstat(pid) -> Dict[str, List[int]]:
    """tid -> [ns on CPU, ns waiting on a run queue, timeslices] of each thread of `pid`."""
    found: Dict[str, List[int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as stream:
                found[tid] = [int(value) for value in stream.read().split()[:3]]
        except (OSError, ValueError):
            continue
    return found


class SchedCapture(Capture):
    def __init__(self, recorder, record: SchedRecord):
        super().__init__(recorder)
        self.record = record
        self.counter = None        # the bpftrace ProfilerProcess, when this capture started it
        self.shared = False        # the futex capture's program carries the probes
        self.pid = None

    def bpftrace_part(self) -> str:
        """The probes the futex capture adds to its program (it calls joined() once it runs)."""
        from .bpf import script_part
        return script_part() if self.record.method == SCHED_METHOD else ""

    def joined(self):
        from ..futex.bpf import FUTEX_BPF_OUT
        self.shared = True
        self.record.output, self.record.with_futex_counters = FUTEX_BPF_OUT, True

    def before_workload(self):
        from ...environment import bpftrace_info
        from ...errors import EnvironmentProblem
        from ..futex import bpf as program
        if self.record.method != SCHED_METHOD or self.shared:
            return
        try:
            with self.recorder.status("attaching the scheduler probes (bpftrace)"):
                self.counter, _ = program.start_futex_counter(
                    (bpftrace_info() or {}).get("path") or "bpftrace", self.recorder.run.path, extra=self.bpftrace_part())
        except EnvironmentProblem as problem:
            self.record.method, self.record.reason = None, str(problem)
            self.record.fix = "see `ortprof doctor --check sched-bpf`"
            self.recorder.note(f"no scheduler states: {problem}")
            return
        self.record.output = program.FUTEX_BPF_OUT

    @property
    def recording(self):
        return self.record.method == SCHED_METHOD and (self.shared or self.counter is not None)

    def follow(self, pid):
        from ..futex import bpf as program
        self.pid = pid
        if self.counter is not None:
            program.set_target(pid)

    def window_opened(self):
        from ..futex import bpf as program
        if not self.recording:
            return
        if self.counter is not None:
            program.mark_window(opening=True)
        self.record.schedstat_open = schedstat(self.pid)

    def window_closing(self):
        from ..futex import bpf as program
        if not self.recording:
            return
        self.record.schedstat_close = schedstat(self.pid)
        if self.counter is not None:
            program.mark_window(opening=False)

    def processes(self):
        return {"bpftrace-sched": self.counter} if self.counter is not None else {}

    def finish(self):
        from .bpf import kernel_symbol, PERIOD_TIMER_FUNCTION
        from .events import read_events
        record = self.record
        if record.method == SCHED_METHOD and record.output:
            record.period_timer = bool(kernel_symbol(PERIOD_TIMER_FUNCTION))
            try:
                with open(self.recorder.run.file(record.output), errors="replace") as stream:
                    events = read_events(stream)
                record.events, record.lost_events = events.counts(), events.lost_events
            except OSError as error:
                record.reason = f"{record.output}: {error.strerror}"
        self.recorder.manifest.set_section("sched", record)


def plan(recorder) -> SchedRecord:
    """Whether this recording follows the scheduler, and if not, why."""
    from ...checks import OK
    from ...doctor import run_checks
    options = recorder.options
    if not getattr(options, "sched", False):
        return SchedRecord(reason="not asked for (record --sched)", fix="record with --sched")
    check = run_checks(["sched-bpf"], thorough=False)[0]
    if check.status != OK:
        return SchedRecord(reason=check.detail, fix=check.fix or None)
    return SchedRecord(method=SCHED_METHOD)


def capture(recorder):
    record = plan(recorder)
    recorder.manifest.set_section("sched", record)
    if record.method is None:
        return None
    return SchedCapture(recorder, record)


def read_timeline(run, manifest, pid):
    """(SchedTimeline or None, why not) from a run directory's sched output."""
    from .events import build_timeline, read_events
    record = manifest.section("sched", SchedRecord)
    if record is None:
        return None, "recorded before ortprof followed the scheduler"
    if record.method is None or not record.output:
        return None, f"scheduler events were not recorded: {record.reason or 'unknown reason'}" + \
            (f" (fix: {record.fix})" if record.fix else "")
    path = run.file(record.output)
    try:
        with open(path, errors="replace") as stream:
            events = read_events(stream)
    except OSError as error:
        return None, f"{path}: cannot read the scheduler events ({error.strerror})"
    if events.window is None:
        return None, "the scheduler program saw no window (it stopped before the window closed)"
    return build_timeline(events, pid, events.window, threads_running(record, events.window)), None


def threads_running(record: SchedRecord, window) -> Dict[int, bool]:
    """tid -> whether schedstat shows the thread on CPU for most of the window (for threads that
    printed no scheduler event: they never left their CPU, or never came back to one)."""
    span = window[1] - window[0]
    running = {}
    for tid, after in record.schedstat_close.items():
        before = record.schedstat_open.get(tid)
        if before and span > 0:
            running[int(tid)] = (after[0] - before[0]) > span / 2
    return running
