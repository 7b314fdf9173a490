"""The sched signal's report types: each session's latency breakdown (report JSON
`sessions[].latency_breakdown`, a contract users' scripts rely on: keep the field names)."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

# Who held a CPU the session's threads were waiting for (HeldBy.whose).
OTHER_PROCESS = "other-process"      # another process on the machine
OWN_SESSION = "own-session"          # the session's own caller or pool worker (more threads than CPUs)
OTHER_SESSION = "other-session"      # another session's pool worker in the same process
SAME_PROCESS = "same-process"        # another thread of the process, not an ORT pool worker of a session
PROFILER = "profiler"                # a profiler's process (bpftrace, perf, py-spy, ortprof): this recording's
                                     # own tools, or another profiler on the machine


@dataclass
class HeldBy:
    """A thread that held the CPU while the caller or its workers were runnable: ms per run."""
    pid: int
    tid: int
    comm: str
    ms: float
    whose: Optional[str] = None                     # OTHER_PROCESS | PROFILER | OWN_SESSION | OTHER_SESSION |
                                                    # SAME_PROCESS
    session: Optional[int] = None                   # the session whose pool (or caller) it is, if any
    threads: int = 1                                # a cause's holder: the threads of that name it adds up
                                                    # (pid, tid: the one that held most)


@dataclass
class WakeUps:
    """Pool workers woken for parallel sections (they slept between them): the delay from the wake-up
    to the worker running."""
    per_run: float                                  # woken workers per run
    mean_us: float
    p95_us: float
    max_us: float
    ms: float                                       # mean ms per run spent waking (sum of the delays)
    contended_ms: float = 0.0                       # of ms: the CPU held by another thread, or throttled
                                                    # (counted as contention or throttling, not as wake-up)
    gap_p90_us: Optional[float] = None              # a worker's sleep between two sections of one run (p90):
                                                    # the spin that would have kept it awake
    gaps_ms: Optional[float] = None                 # the workers' sleeps between sections, ms per run (what
                                                    # spinning through them would cost in CPU)


@dataclass
class RunGroup:
    """Mean figures per run of a group of runs."""
    runs: int
    run_ms: float                                   # mean wall ms per run
    states_ms: Dict[str, float]                     # the caller's mean ms per run: on_cpu, runnable,
                                                    # throttled, blocked, other
    held_by: List[HeldBy] = field(default_factory=list)          # the 8 that held most
    top_holder: Optional[HeldBy] = None             # the threads of one name that held most together (three
                                                    # hogs are one), profilers only when nothing else did
    workers_ms: Dict[str, float] = field(default_factory=dict)   # the session's pool workers during the run:
                                                    # runnable while another thread held their CPU (preempted,
                                                    # or woken and waiting), throttled
    sections: str = "unknown"                       # what the scheduler saw of the parallel sections:
                                                    # visible (workers sleep between them), spinning (not
                                                    # visible: unknown), no-pool, unused (workers slept
                                                    # through the runs), unknown (workers not tied to it)
    sections_per_run: Optional[float] = None        # sections seen per run; None: unknown
    wakeup: Optional[WakeUps] = None                # None: no wake-up seen, or sections not visible
    straggler_ms: Optional[float] = None            # mean ms per run the last worker of a section finished
                                                    # after the others (or the caller slept waiting for it);
                                                    # None: sections not visible
    blocked_on_workers_ms: float = 0.0              # part of states_ms.blocked: the caller asleep until a
                                                    # worker of its session woke it


@dataclass
class RunDetail:
    """One slow run."""
    start_s: float                                  # seconds after the window opened
    run_ms: float
    states_ms: Dict[str, float]
    held_by: List[HeldBy] = field(default_factory=list)
    workers_ms: Dict[str, float] = field(default_factory=dict)
    wakeup_ms: Optional[float] = None
    straggler_ms: Optional[float] = None


@dataclass
class Cause:
    """What made the slower runs slower: the figure that grew most between two groups of runs."""
    id: str                                         # cpu-contention | cpu-throttling | wake-up-delay | straggler |
                                                    # blocked | other | on-cpu | unknown | none
    excess_ms: float                                # slower group's run_ms minus the faster group's
    explained_ms: float                             # how much the cause's own figure grew, ms per run
    detail: str                                     # one sentence with the numbers
    holder: Optional[HeldBy] = None                 # cpu-contention: the top holder in the slower group, its
                                                    # threads of one name together; profilers only when
                                                    # nothing else held the CPU


@dataclass
class Step:
    """Latency changed at one moment of the window (a step, not scatter): the runs before and after."""
    at_s: float                                     # seconds after the window opened
    before: RunGroup
    after: RunGroup
    cause: Cause                                    # the slower side against the faster one


@dataclass
class LatencyBreakdown:
    typical: Optional[RunGroup] = None              # runs between p40 and p60
    slow: Optional[RunGroup] = None                 # runs at or above p95, and at least the 5 slowest
    cause: Optional[Cause] = None                   # slow against typical
    step: Optional[Step] = None                     # when latency stepped rather than scattered
    slow_runs: List[RunDetail] = field(default_factory=list)    # the slowest runs, slowest first
    workers: Optional[List[int]] = None             # the session's pool workers joined; None: not known
    source: Optional[str] = None                    # how the scheduler events were recorded
    notes: List[str] = field(default_factory=list)
