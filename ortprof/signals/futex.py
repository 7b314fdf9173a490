"""Futex calls of the profiled process: counted in BPF (bpftrace) or traced by perf."""
from dataclasses import dataclass, field
from typing import Optional

from ..checks import OK
from ..errors import EnvironmentProblem
from ..recording.futex_bpf import FUTEX_BPF_LOG, FUTEX_BPF_OUT, FUTEX_BPF_SCRIPT
from .base import Signal

BPF_METHOD, PERF_METHOD = "bpftrace", "perf-tracepoints"


@dataclass
class FutexProbe:
    """run.json "futex_probe": whether this run could record futex events; if not, why and the fix."""
    usable: Optional[bool] = None
    reason: Optional[str] = None
    fix: Optional[str] = None


@dataclass
class BpfUse:
    """Whether the futex counters run in BPF; if not, why and the fix."""
    usable: Optional[bool] = None
    reason: Optional[str] = None
    fix: Optional[str] = None


@dataclass
class FutexPlan:
    """run.json "futex": how futex calls are recorded. method "bpftrace": exact counts and
    times from in-kernel counters, perf samples one stack per `stack_sample_period` calls
    (None: no stacks); "perf-tracepoints": every call traced by perf with its stack;
    None: not recorded."""
    requested: Optional[str] = None         # --futex-method: auto | bpf | perf
    method: Optional[str] = None
    stack_sample_period: Optional[int] = None
    bpf: BpfUse = field(default_factory=BpfUse)
    bpftrace_attach_seconds: Optional[float] = None


def futex_probe_outcome(options, chosen, futex_check) -> FutexProbe:
    """Whether this run can record futex events, and if not, why and what fixes it
    (the report explains missing futex figures from exactly this). `chosen`: the
    profilers record runs; `futex_check`: doctor's "futex-tracepoints" check."""
    if not options.futex:
        return FutexProbe(False, "futex tracing was turned off with --no-futex", "record without --no-futex")
    if "perf" not in chosen:
        return FutexProbe(False, "futex events are recorded by perf, which this run does not use",
                          "ortprof doctor --check perf --check perf-permission" if options.profiler == "auto"
                          else "record with --profiler perf or --profiler both")
    usable = futex_check.status == OK
    return FutexProbe(usable, None if usable else futex_check.detail, (futex_check.fix or None) if not usable else None)


def choose_futex_method(options, chosen, probe: FutexProbe) -> FutexPlan:
    """How futex calls are recorded (FutexPlan); `bpf` says why BPF is or is not used, with the fix."""
    plan = FutexPlan(requested=options.futex_method)
    if not options.futex or "perf" not in chosen:
        return plan
    if options.futex_method == "perf":
        plan.bpf.reason = "not tried: --futex-method perf"
    else:
        from ..doctor import run_checks
        check = run_checks(["futex-bpf"], thorough=False)[0]
        usable = check.status == OK
        plan.bpf = BpfUse(usable, None if usable else check.detail, None if usable else check.fix)
        if usable:
            plan.method = BPF_METHOD
            plan.stack_sample_period = options.futex_stack_period if probe.usable else None
            return plan
        if options.futex_method == "bpf":
            raise EnvironmentProblem(f"--futex-method bpf: {check.detail}; fix: {check.fix}")
    if probe.usable:
        plan.method, plan.stack_sample_period = PERF_METHOD, 1
    return plan


SIGNAL = Signal(
    name="futex", description="futex calls per thread: counts, time blocked, the stacks that make them",
    sections={"futex_probe": FutexProbe, "futex": FutexPlan}, files=(FUTEX_BPF_OUT, FUTEX_BPF_LOG, FUTEX_BPF_SCRIPT),
    checks=("futex-tracepoints", "futex-bpf"))
