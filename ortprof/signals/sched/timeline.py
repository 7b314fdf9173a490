"""Scheduler states of the recorded process's threads in the window: what the sched signal's
capture reads back from its files (capture.py: `read_timeline`) and what its analysis joins with
the run() spans (breakdown.py). All times are CLOCK_MONOTONIC nanoseconds, the clock of the
run() spans (the hook's time.monotonic, perf -k mono, bpftrace's nsecs).

A thread is, at every instant of the window, in exactly one state:
- on_cpu: running;
- runnable: ready to run, waiting for a CPU (woken, or preempted while running);
- throttled: runnable while its cgroup's CPU quota was used up (no thread of the group could run);
- blocked: off CPU in a futex wait (ORT's pool workers parked, a lock, the GIL);
- other: off CPU for any other reason (I/O, page faults, sleeps, other syscalls).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

ON_CPU = "on_cpu"
RUNNABLE = "runnable"
THROTTLED = "throttled"
BLOCKED = "blocked"
OTHER = "other"
STATES = (ON_CPU, RUNNABLE, THROTTLED, BLOCKED, OTHER)


@dataclass
class Holder:
    """A thread that had the CPU while one of the process's threads was runnable on it."""
    pid: int
    tid: int
    comm: str
    ns: int


@dataclass
class StateInterval:
    tid: int
    state: str                              # one of STATES
    start_ns: int
    end_ns: int
    cpu: Optional[int] = None               # the CPU it ran on (on_cpu) or waited for (runnable, throttled)
    woken_by: Optional[int] = None          # runnable after a wake-up: the waking thread's tid
    holders: List[Holder] = field(default_factory=list)    # runnable, throttled: who had its CPU meanwhile

    @property
    def ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass
class ThrottledPeriod:
    """The process's cgroup was throttled (its quota used up) from start_ns to end_ns."""
    start_ns: int
    end_ns: int
    cpu: Optional[int] = None               # the CPU whose share of the group was throttled (cpu.stat's
                                            # throttled time adds up these periods over the CPUs)


@dataclass
class SchedTimeline:
    source: str                                         # how it was recorded (e.g. "bpftrace", "perf")
    window: Tuple[int, int]                             # (open, close) ns
    pid: int
    threads: Dict[int, List[StateInterval]] = field(default_factory=dict)   # tid -> intervals in time order,
                                                                            # clipped to the window, no gaps
                                                                            # while the thread lived
    comms: Dict[int, str] = field(default_factory=dict)                     # tid -> comm (the process's threads)
    throttled: List[ThrottledPeriod] = field(default_factory=list)          # empty: not throttled, or no quota
    throttling_known: bool = False                      # whether throttled periods were recorded at all
    lost_events: int = 0                                # events the kernel dropped (0: the timeline is whole)
    notes: List[str] = field(default_factory=list)      # what it could not record, said plainly

    def states_between(self, tid: int, start_ns: int, end_ns: int) -> List[StateInterval]:
        """Thread `tid`'s intervals clipped to [start_ns, end_ns)."""
        clipped = []
        for interval in self.threads.get(tid, ()):
            if interval.end_ns <= start_ns:
                continue
            if interval.start_ns >= end_ns:
                break
            begin, end = max(interval.start_ns, start_ns), min(interval.end_ns, end_ns)
            if end > begin:
                share = (end - begin) / interval.ns if interval.ns else 0.0
                holders = [Holder(h.pid, h.tid, h.comm, int(h.ns * share)) for h in interval.holders]
                clipped.append(StateInterval(tid, interval.state, begin, end, interval.cpu,
                                             interval.woken_by, holders))
        return clipped
