"""Futex calls of the profiled process: counted in BPF (the compiled program of sched/compiled,
else bpftrace) or traced by perf.

bpf.py is the bpftrace program and the driver of both, counts.py reads what it printed,
accumulator.py turns perf's futex events (and those counts) into per-thread
figures and the stacks that make the calls."""
from dataclasses import dataclass, field
from typing import List, Optional

from ...checks import OK
from ...errors import EnvironmentProblem
from ..base import Capture, Signal, Usability
from .accumulator import BPF_METHOD, PERF_METHOD
from . import bpf
from .bpf import FUTEX_BPF_LOG, FUTEX_BPF_OUT, FUTEX_BPF_SCRIPT


@dataclass
class FutexPlan:
    """run.json "futex": how futex calls are recorded. method "bpftrace": exact counts and
    times from in-kernel counters, perf samples one stack per `stack_sample_period` calls
    (None: no stacks); "perf-tracepoints": every call traced by perf with its stack;
    None: not recorded."""
    requested: Optional[str] = None         # --futex-method: auto | bpf | perf
    method: Optional[str] = None
    stack_sample_period: Optional[int] = None
    bpf: Usability = field(default_factory=Usability)   # whether the counters run in BPF
    bpftrace_attach_seconds: Optional[float] = None     # seconds the BPF program took to attach
    program: Optional[str] = None           # the BPF program that counted: "libbpf" (compiled) | "bpftrace"


def futex_probe_outcome(options, chosen, futex_check) -> Usability:
    """Whether this run can record futex events, and if not, why and what fixes it
    (the report explains missing futex figures from exactly this). `chosen`: the
    profilers record runs; `futex_check`: doctor's "futex-tracepoints" check."""
    if not options.futex:
        return Usability(False, "futex tracing was turned off with --no-futex", "record without --no-futex")
    if "perf" not in chosen:
        return Usability(False, "futex events are recorded by perf, which this run does not use",
                          "ortprof doctor --check perf --check perf-permission" if options.profiler == "auto"
                          else "record with --profiler perf or --profiler both")
    usable = futex_check.status == OK
    return Usability(usable, None if usable else futex_check.detail, (futex_check.fix or None) if not usable else None)


def choose_futex_method(options, chosen, probe: Usability) -> FutexPlan:
    """How futex calls are recorded (FutexPlan); `bpf` says why BPF is or is not used, with the fix."""
    plan = FutexPlan(requested=options.futex_method)
    if not options.futex or "perf" not in chosen:
        return plan
    if options.futex_method == "perf":
        plan.bpf.reason = "not tried: --futex-method perf"
    else:
        from ...doctor import run_checks
        check = run_checks(["futex-bpf"], thorough=False)[0]
        usable = check.status == OK
        plan.bpf = Usability(usable, None if usable else check.detail, None if usable else check.fix)
        if usable:
            plan.method = BPF_METHOD
            plan.stack_sample_period = options.futex_stack_period if probe.usable else None
            return plan
        if options.futex_method == "bpf":
            raise EnvironmentProblem(f"--futex-method bpf: {check.detail}; fix: {check.fix}")
    if probe.usable:
        plan.method, plan.stack_sample_period = PERF_METHOD, 1
    return plan


@dataclass
class FutexThreadRow:
    tid: int
    role: str
    calls: int
    waits: int
    wakes: int
    calls_per_s: float
    time_ms_per_s: float
    calls_per_inference: Optional[float]


@dataclass
class FutexStack:
    stack: str
    calls: int


@dataclass
class FutexSection:
    recorded: bool = False
    calls: Optional[int] = None
    calls_per_s: Optional[float] = None
    time_ms_per_s: Optional[float] = None
    calls_per_inference: Optional[float] = None
    threads: List[FutexThreadRow] = field(default_factory=list)
    top_stacks: List[FutexStack] = field(default_factory=list)
    missing_reason: Optional[str] = None     # why there are no futex figures, with the fix
    method: Optional[str] = None             # "bpftrace" (in-kernel counters) | "perf-tracepoints" (every call)
    wait_ms_per_s: Optional[float] = None    # time blocked: the share of time_ms_per_s spent in wait calls
    stacks_sampled: bool = False             # top_stacks from a sample of the calls (calls, counts, times: exact)
    stack_sample_period: Optional[int] = None   # one stack per this many calls (1: every call)
    stack_samples: Optional[int] = None      # calls whose stack was recorded; top_stacks[].calls = these x period


def load(run, loaded):
    """Exact futex counts of the in-kernel counters, when the run has them (method "bpftrace");
    perf's futex events (per call, or sampled stacks) arrive with the samples."""
    from .counts import load_futex_counts
    from ...errors import InputError
    plan = loaded.manifest.section("futex", FutexPlan) or FutexPlan()
    path = run.file(FUTEX_BPF_OUT)
    if plan.method != BPF_METHOD or not path.exists():
        return
    try:
        counts = load_futex_counts(path)
    except InputError as error:
        loaded.notes.append(str(error))
        return
    if not counts.complete:
        loaded.notes.append("bpftrace stopped before its final print: futex counts stop at its last 1 s snapshot")
    loaded.profile.futex.use_counts(counts.threads, plan.stack_sample_period)


def futex_section(profile, window_seconds, inferences, roles_by_tid, top=8) -> FutexSection:
    from ...analysis.roles import UNKNOWN
    futex = profile.futex
    threads = []
    total_calls, total_seconds = 0, 0.0
    for tid, stats in sorted(futex.threads.items()):
        total_calls += stats.calls
        total_seconds += stats.seconds
        threads.append(FutexThreadRow(
            tid=tid, role=roles_by_tid.get(tid, UNKNOWN), calls=stats.calls,
            waits=stats.waits, wakes=stats.wakes,
            calls_per_s=round(stats.calls / window_seconds, 1),
            time_ms_per_s=round(1000 * stats.seconds / window_seconds, 2),
            calls_per_inference=round(stats.calls / inferences, 2) if inferences else None))
    period = futex.stack_sample_period
    recorded = futex.method == BPF_METHOD or any(name.endswith("sys_enter_futex") for name in profile.events)
    return FutexSection(
        recorded=recorded,
        calls=total_calls,
        calls_per_s=round(total_calls / window_seconds, 1),
        time_ms_per_s=round(1000 * total_seconds / window_seconds, 2),
        wait_ms_per_s=round(1000 * sum(s.wait_seconds for s in futex.threads.values()) / window_seconds, 2),
        calls_per_inference=round(total_calls / inferences, 2) if inferences else None,
        threads=sorted(threads, key=lambda row: -row.calls),
        top_stacks=[FutexStack(stack, count * period) for stack, count in futex.stacks.most_common(top)],
        method=futex.method if recorded else None, stacks_sampled=period > 1, stack_sample_period=period,
        stack_samples=sum(futex.stacks.values()))


def report(loaded, report, top):
    profile = loaded.profile
    if profile.has_samples or profile.futex.threads:
        inferences = sum(s.runs for s in report.sessions)
        roles_by_tid = {row.tid: row.role for row in report.threads}
        report.futex = futex_section(profile, loaded.window_seconds, inferences, roles_by_tid)
    report.futex.missing_reason = missing_reason(loaded, report)


def missing_reason(loaded, report) -> Optional[str]:
    """Why the report has no futex figures, with the fix; None when it has them."""
    probe = loaded.manifest.section("futex_probe", Usability)
    if probe is not None and probe.usable is False:
        reason = f"futex tracepoints were not usable when recording: {probe.reason or 'unknown reason'}"
        return reason + (f" (fix: {probe.fix})" if probe.fix else "")
    if loaded.perf_data != "present" or loaded.unreadable:
        return "no futex figures without perf data"
    if not report.futex.recorded:
        return "the recording has no futex events (recorded with --no-futex, or tracepoints unavailable)"
    return None


class FutexCapture(Capture):
    """Futex calls of the followed process: counted by a bpftrace program (attached before the
    workload starts: its ~0.4 s of compiling would otherwise slow the first requests on a busy
    machine), with perf sampling one stack in `stack_sample_period`; or every call traced by perf."""

    def __init__(self, recorder):
        super().__init__(recorder)
        self.counter = None      # the bpftrace ProfilerProcess

    @property
    def plan(self) -> FutexPlan:
        return self.recorder.manifest.section("futex", FutexPlan)

    def before_workload(self):
        """The compiled program when it is built, else bpftrace; when neither attaches, calls are
        traced by perf (or, with --futex-method bpf, record stops)."""
        plan = self.plan
        if plan.method != BPF_METHOD:
            return
        # Other signals' probes that share the program (the scheduler's: one program, one start).
        joining = [capture for capture in self.recorder.captures if hasattr(capture, "bpftrace_part")]
        problems = []
        for program, start in self._programs(joining):
            try:
                with self.recorder.status(f"attaching the futex counters ({program})"):
                    self.counter, seconds = start()
            except EnvironmentProblem as problem:
                problems.append(problem)
                continue
            plan.bpftrace_attach_seconds, plan.program = round(seconds, 3), program
            for capture in joining:
                capture.joined(program)
            if problems:
                self.recorder.note(f"futex counters in bpftrace: the compiled BPF program did not attach: "
                                   f"{problems[0]}")
            return
        failure = problems[-1] if problems else EnvironmentProblem("no BPF program to count futex calls")
        if plan.requested == "bpf":
            raise failure
        plan.bpf.usable, plan.bpf.reason = False, str(failure)
        plan.bpf.fix = "see `ortprof doctor --check futex-bpf`; or record with --futex-method perf"
        usable = self.recorder.manifest.section("futex_probe", Usability).usable
        plan.method, plan.stack_sample_period = (PERF_METHOD, 1) if usable else (None, None)
        self.recorder.note(f"futex calls are traced by perf, one event per call: {failure}")

    def _programs(self, joining):
        """(name, start) of the programs to try in turn: the compiled one, then bpftrace."""
        from ...environment import bpftrace_info
        from ..sched.compiled import PROGRAM, loader_path
        directory = self.recorder.run.path
        loader, _ = loader_path()
        if loader:
            sched = any(capture.wants_compiled() for capture in joining)
            yield PROGRAM, lambda: bpf.start_compiled_counter(loader, directory, sched)
        bpftrace = bpftrace_info()
        if bpftrace is not None:
            yield "bpftrace", lambda: bpf.start_futex_counter(
                bpftrace.get("path") or "bpftrace", directory,
                extra="".join(capture.bpftrace_part() for capture in joining))

    def follow(self, pid):
        if self.counter is not None:
                bpf.set_target(pid)

    def perf_options(self):
        period = self.plan.stack_sample_period
        return {"futex": bool(period), "futex_stack_period": period if period != 1 else None}

    def window_opened(self):
        if self.counter is not None:
                bpf.mark_window(opening=True)

    def window_closing(self):
        if self.counter is not None:
                bpf.mark_window(opening=False)

    def processes(self):
        return {self.counter.name: self.counter} if self.counter is not None else {}


def capture(recorder):
    plan = recorder.manifest.section("futex", FutexPlan)
    return FutexCapture(recorder) if plan is not None and plan.method is not None else None


SIGNAL = Signal(
    name="futex", description="futex calls per thread: counts, time blocked, the stacks that make them",
    sections={"futex_probe": Usability, "futex": FutexPlan}, files=(FUTEX_BPF_OUT, FUTEX_BPF_LOG, FUTEX_BPF_SCRIPT),
    checks=("futex-tracepoints", "futex-bpf"), load=load, report=report, report_sections=("futex",),
    missing=lambda loaded, report: report.futex.missing_reason, capture=capture)
