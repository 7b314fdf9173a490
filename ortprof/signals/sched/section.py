"""The sched signal's report types: each session's latency breakdown (report JSON
`sessions[].latency_breakdown`, a contract users' scripts rely on: keep the field names)."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class HeldBy:
    """A thread that held the CPU while the caller or its workers were runnable: ms per run."""
    pid: int
    tid: int
    comm: str
    ms: float


@dataclass
class RunGroup:
    """Mean figures per run of a group of runs."""
    runs: int
    run_ms: float                                   # mean wall ms per run
    states_ms: Dict[str, float]                     # the caller's mean ms per run: on_cpu, runnable,
                                                    # throttled, blocked, other
    held_by: List[HeldBy] = field(default_factory=list)


@dataclass
class LatencyBreakdown:
    typical: Optional[RunGroup] = None              # runs between p40 and p60
    slow: Optional[RunGroup] = None                 # runs at or above p95, and at least the 5 slowest
