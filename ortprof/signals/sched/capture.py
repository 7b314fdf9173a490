"""Recording the scheduler's view of the process in the window, and reading it back.

Two producers write the same lines (events.py reads both): the compiled BPF program
(compiled/: libbpf, a ring buffer drained a few times a second; the default when it is
built, as root) and the bpftrace program (bpf.py: one line printed per event, several
times the cost; only on request, --sched). Either one also counts futex calls
(futex/bpf.py): the scheduler part needs to know whether a thread that leaves its CPU is in
a futex wait, which the futex part already tracks, and one program starts once, before the
workload. When futex calls are counted in BPF the futex capture starts the program with the
scheduler part in it; otherwise this capture starts it itself (same files, same marks).

Besides the program's output, the capture reads each thread's /proc schedstat (time on
CPU, time waiting on a run queue) at the window's open and close: a thread that never
left its CPU prints nothing, and the figures are the kernel's own account to check
against.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ...sysfiles import thread_schedstats
from ..base import Capture
from .compiled import PROGRAM as COMPILED

BPFTRACE = "bpftrace"
BPFTRACE_COST = "bpftrace costs p50 x1.4-2.9 and +6.5-10 CPU points with spinning off (docs/benchmarks.md)"


@dataclass
class SchedRecord:
    """run.json "sched": how scheduler events were recorded, or why not."""
    method: Optional[str] = None            # the program: "libbpf" (compiled) | "bpftrace"; None: not recorded
    reason: Optional[str] = None
    fix: Optional[str] = None
    output: Optional[str] = None            # the run-directory file holding the program's output
    with_futex_counters: bool = False       # one program with the futex counters (futex-bpf.*)
    period_timer: bool = False              # the cgroup's quota refills are seen (throttled periods end there)
    events: Dict[str, int] = field(default_factory=dict)   # episodes, holder_stretches, period_timer, lost
    lost_events: int = 0
    schedstat_open: Dict[str, List[int]] = field(default_factory=dict)    # tid -> /proc schedstat: on-CPU ns,
    schedstat_close: Dict[str, List[int]] = field(default_factory=dict)   # run-queue wait ns, timeslices
    requested: Optional[bool] = None        # --sched (True), --no-sched (False), neither (None)


def schedstat(pid) -> Dict[str, List[int]]:
    """tid (text, as run.json keeps it) -> [ns on CPU, ns waiting on a run queue, timeslices]."""
    return {str(tid): values for tid, values in (thread_schedstats(pid) or {}).items()}


class SchedCapture(Capture):
    def __init__(self, recorder, record: SchedRecord, bpftrace_usable: bool):
        super().__init__(recorder)
        self.record = record
        self.counter = None        # the program's ProfilerProcess, when this capture started it
        self.shared = False        # the futex capture's program carries the probes
        self.pid = None
        # bpftrace may carry the probes when the compiled program does not attach: only on request
        self.bpftrace_fallback = bpftrace_usable and record.requested is True

    def wants_compiled(self) -> bool:
        return self.record.method == COMPILED

    def bpftrace_part(self) -> str:
        """The probes the futex capture adds to its bpftrace program (it calls joined() once it runs)."""
        from .bpf import script_part
        usable = self.record.method == BPFTRACE or (self.record.method == COMPILED and self.bpftrace_fallback)
        return script_part() if usable else ""

    def joined(self, program):
        """The futex capture's program (`program`) runs, with the scheduler part when it could."""
        from ..futex.bpf import FUTEX_BPF_OUT
        if (program == COMPILED and self.wants_compiled()) or (program == BPFTRACE and self.bpftrace_part()):
            self.shared = True
            self.record.method, self.record.output, self.record.with_futex_counters = program, FUTEX_BPF_OUT, True
        else:
            self._not_recorded("the compiled BPF program did not attach (see the futex counters' note), and "
                               f"bpftrace was not asked for: {BPFTRACE_COST}")

    def _not_recorded(self, reason):
        self.record.method, self.record.reason = None, reason
        self.record.fix = "see `ortprof doctor --check sched-bpf`"
        self.recorder.note(f"no scheduler states: {reason}")

    def before_workload(self):
        from ...environment import bpftrace_info
        from ...errors import EnvironmentProblem
        from ..futex import bpf as program
        from .compiled import loader_path
        if self.record.method is None or self.shared:
            return
        directory = self.recorder.run.path
        attempts = []
        loader, _ = loader_path()
        if self.record.method == COMPILED and loader:
            attempts.append((COMPILED, lambda: program.start_compiled_counter(loader, directory, sched=True)))
        if self.record.method == BPFTRACE or self.bpftrace_fallback:
            attempts.append((BPFTRACE, lambda: program.start_futex_counter(
                (bpftrace_info() or {}).get("path") or BPFTRACE, directory, extra=self.bpftrace_part())))
        problems = []
        for name, start in attempts:
            try:
                with self.recorder.status(f"attaching the scheduler probes ({name})"):
                    self.counter, _ = start()
            except EnvironmentProblem as problem:
                problems.append(str(problem))
                continue
            self.record.method, self.record.output = name, program.FUTEX_BPF_OUT
            return
        self._not_recorded("; ".join(problems) or "no BPF program to record them")

    @property
    def recording(self):
        return self.record.method is not None and (self.shared or self.counter is not None)

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
        return {f"{self.counter.name}-sched": self.counter} if self.counter is not None else {}

    def finish(self):
        from .bpf import kernel_symbol, PERIOD_TIMER_FUNCTION
        from .events import read_events
        record = self.record
        if record.method is not None and record.output:
            # the compiled program finds the group's timers itself; bpftrace by their kernel symbol
            record.period_timer = record.method == COMPILED or bool(kernel_symbol(PERIOD_TIMER_FUNCTION))
            try:
                with open(self.recorder.run.file(record.output), errors="replace") as stream:
                    events = read_events(stream)
                record.events, record.lost_events = events.counts(), events.lost_events
            except OSError as error:
                record.reason = f"{record.output}: {error.strerror}"
        self.recorder.manifest.set_section("sched", record)


def plan(recorder):
    """(SchedRecord: whether this recording follows the scheduler, with which program, and if
    not, why; whether bpftrace could). By default only with the compiled program: bpftrace's
    cost is too high to pay unasked."""
    from ...checks import OK
    from ...doctor import Facts, sched_bpftrace_check
    from .compiled import BUILD_FIX, loader_path
    requested = getattr(recorder.options, "sched", None)
    if requested is False:
        return SchedRecord(reason="turned off (record --no-sched)", fix="record without --no-sched",
                           requested=False), False
    facts = Facts()
    loader, why_not = loader_path()
    if not facts.root:
        return SchedRecord(reason="BPF programs load as root only", fix="run ortprof as root",
                           requested=requested), False
    bpftrace = sched_bpftrace_check(facts) if (requested or not loader) else None
    bpftrace_usable = bpftrace is not None and bpftrace.status == OK
    if loader:
        return SchedRecord(method=COMPILED, requested=requested), bpftrace_usable
    if requested and bpftrace_usable:
        return SchedRecord(method=BPFTRACE, requested=requested), True
    if bpftrace_usable:
        return SchedRecord(reason=f"not asked for: {why_not}, and {BPFTRACE_COST}",
                           fix=f"record with --sched; or build the compiled program: {BUILD_FIX}",
                           requested=requested), True
    return SchedRecord(reason=f"{why_not}; {bpftrace.detail if bpftrace else 'bpftrace not checked'}",
                       fix=BUILD_FIX, requested=requested), False


def capture(recorder):
    record, bpftrace_usable = plan(recorder)
    recorder.manifest.set_section("sched", record)
    if record.method is None:
        return None
    return SchedCapture(recorder, record, bpftrace_usable)


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
    return build_timeline(events, pid, events.window, threads_running(record, events.window),
                          source=record.method), None


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
