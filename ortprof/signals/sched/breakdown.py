"""Why was a run slow: each run() span joined with the scheduler states of its caller and of its
session's pool workers (timeline.SchedTimeline).

Per run:
- the caller's wall time split into its states (on_cpu, runnable, throttled, blocked, other);
- who held the CPU while the caller or a worker was runnable (holders of its runnable intervals);
- the workers' preempted time (runnable after running, not after a wake-up) and throttled time;
- parallel sections, where the scheduler sees them: a worker that sleeps between sections is woken
  for each (its runnable interval after a wake-up): the wake-up delay is the time from that wake-up
  to the worker running; the straggler's lateness is how long after the section's other workers the
  last one went back to sleep, plus the time the caller itself slept until a worker woke it. ORT's
  caller spins at the end of a section (on CPU: invisible), and workers that spin between sections
  are never woken: their sections are unknown, not absent.

Runs are then grouped (typical: p40..p60; slow: >= p95 and at least the 5 slowest) into mean
figures per run, and the growth of each figure between the groups names the cause. A step (latency
changing once during the window rather than scattering) is found and explained the same way.
"""
import math
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from .section import (OTHER_PROCESS, OTHER_SESSION, OWN_SESSION, PROFILER, SAME_PROCESS, Cause, HeldBy,
                      LatencyBreakdown, RunDetail, RunGroup, Step, WakeUps)
from .timeline import BLOCKED, ON_CPU, OTHER, RUNNABLE, STATES, THROTTLED, Holder, SchedTimeline, StateInterval

MIN_RUNS = 10                 # fewer runs than this: no groups to compare
SLOW_MIN_RUNS = 5             # the slow group has at least the 5 slowest runs
SLOW_RUNS_SHOWN = 10          # per-run details of the slowest runs
HOLDERS_SHOWN = 8
SECTION_GAP_NS = 200_000      # wake-ups of workers closer than this (each worker once) are one section
CAUSE_MIN_MS = 0.5            # slow runs this much slower than typical (and CAUSE_MIN_SHARE of it) need a cause
CAUSE_MIN_SHARE = 0.25
EXPLAINED_MIN_SHARE = 0.3     # a figure that grew by less than this share of the excess explains nothing
SPINNING_BUSY_SHARE = 0.5     # workers on CPU (or runnable) this share of a run without a wake-up: spinning
STEP_MIN_SIDE = 5             # each side of a step has at least this many runs (and a tenth of them)
STEP_RATIO = 1.5              # the slower side's median at least this times the faster side's
STEP_MIN_MS = 0.5
STEP_SEPARATION = 0.7         # this share of the slower side above the faster side's p90: a step, not scatter

# Section visibility (RunGroup.sections).
VISIBLE, SPINNING, NO_POOL, UNUSED, UNKNOWN = "visible", "spinning", "no-pool", "unused", "unknown"
# Profilers' processes, by name: this recording's bpftrace and perf hold CPUs too (its cost), as do other
# profilers on the machine. Named as such so that a cause is not blamed on them when something else
# held the CPU.
PROFILER_COMMS = frozenset({"bpftrace", "perf", "py-spy", "ortprof"})
PROFILER_NOTE_SHARE = 0.1     # profilers held this share of the slow runs' wait: a note says so
PROFILER_OVER_SHARE = 0.25    # a cause names a profiler when nothing else held a quarter as much as it did


def _percentile(sorted_values, q):
    from ...analysis.latency import percentile
    return percentile(sorted_values, q)


@dataclass
class SessionThreads:
    """The threads of the process tied to sessions, to join one session's runs."""
    session: int
    workers: Optional[List[int]]              # its pool workers; [] none (one thread); None: not known
    spinning: Optional[bool]                  # its workers spin between sections (allow_spinning); None: unknown
    tid_session: Dict[int, int] = field(default_factory=dict)   # pool workers and callers -> their session


@dataclass
class _Wake:
    worker: int
    at_ns: int                                # the wake-up
    delay_ns: int                             # wake-up -> on CPU
    asleep_ns: int                            # back to sleep (end of its share of the section)
    contended_ns: int = 0                     # of the delay: its CPU held by another thread, or throttled


@dataclass
class RunFacts:
    """One run joined with the scheduler."""
    start_ns: int
    end_ns: int
    caller: int
    states: Counter = field(default_factory=Counter)                 # caller state -> ns
    holders: Counter = field(default_factory=Counter)                # (pid, tid, comm) -> ns
    workers: Counter = field(default_factory=Counter)                # runnable (preempted) / throttled -> ns
    worker_busy_ns: int = 0                                          # workers on CPU or runnable
    wakes: List[_Wake] = field(default_factory=list)
    gaps_ns: List[int] = field(default_factory=list)                 # workers' sleeps between two wake-ups
    caller_waits_ns: int = 0                                         # caller asleep until a worker woke it
    sections: str = UNKNOWN
    section_count: Optional[int] = None
    straggler_ns: Optional[int] = None

    @property
    def ns(self) -> int:
        return self.end_ns - self.start_ns


class Intervals:
    """Each thread's intervals with an index on their ends, to find a run's intervals fast, and the
    process's own threads on each CPU: the capture records other processes' threads as holders; a
    thread of the process that held the CPU is in the timeline itself."""

    def __init__(self, timeline: SchedTimeline):
        self.pid = timeline.pid
        self.comms = timeline.comms
        self.threads = timeline.threads
        self.ends = {tid: [interval.end_ns for interval in intervals] for tid, intervals in timeline.threads.items()}
        running: Dict[int, List[StateInterval]] = {}
        for intervals in timeline.threads.values():
            for interval in intervals:
                if interval.state == ON_CPU and interval.cpu is not None:
                    running.setdefault(interval.cpu, []).append(interval)
        self.running = {cpu: sorted(items, key=lambda i: i.start_ns) for cpu, items in running.items()}
        self.running_starts = {cpu: [i.start_ns for i in items] for cpu, items in self.running.items()}
        self.longest = max((i.ns for items in running.values() for i in items), default=0)

    def overlapping(self, tid: int, start_ns: int, end_ns: int) -> Iterator[Tuple[int, StateInterval, int, float]]:
        """(index, interval, ns inside [start_ns, end_ns), share of the interval inside)."""
        intervals = self.threads.get(tid, [])
        index = bisect_right(self.ends.get(tid, []), start_ns)
        while index < len(intervals) and intervals[index].start_ns < end_ns:
            interval = intervals[index]
            inside = min(interval.end_ns, end_ns) - max(interval.start_ns, start_ns)
            if inside > 0:
                yield index, interval, inside, inside / interval.ns if interval.ns else 0.0
            index += 1

    def holders(self, interval: StateInterval, start_ns: int, end_ns: int) -> List[Holder]:
        """Who held the CPU `interval` (a wait) waited for within [start_ns, end_ns): the capture's
        holders (other processes) in proportion, and the process's own threads on that CPU."""
        inside = min(interval.end_ns, end_ns) - max(interval.start_ns, start_ns)
        if inside <= 0:
            return []
        share = inside / interval.ns if interval.ns else 0.0
        found = [Holder(h.pid, h.tid, h.comm, int(h.ns * share)) for h in interval.holders]
        if interval.cpu is None:
            return found
        begin, end = max(interval.start_ns, start_ns), min(interval.end_ns, end_ns)
        items, starts = self.running.get(interval.cpu, []), self.running_starts.get(interval.cpu, [])
        index = bisect_left(starts, begin - self.longest)
        while index < len(items) and items[index].start_ns < end:
            other = items[index]
            overlap = min(end, other.end_ns) - max(begin, other.start_ns)
            if overlap > 0 and other.tid != interval.tid:
                found.append(Holder(self.pid, other.tid, self.comms.get(other.tid, ""), overlap))
            index += 1
        return found


def _held_ns(holders: Sequence[Holder], ns: int) -> int:
    """How long other threads held the CPU a wait of `ns` was for (the idle task, tid 0, holds nothing)."""
    return int(min(sum(holder.ns for holder in holders if holder.tid != 0), ns))


def _waiting(interval: StateInterval) -> bool:
    return interval.state in (RUNNABLE, THROTTLED)


def _chain_start(intervals: Sequence[StateInterval], index: int) -> int:
    """The first of the runnable/throttled intervals that `index` belongs to."""
    while index > 0 and _waiting(intervals[index - 1]):
        index -= 1
    return index


def _woken(intervals: Sequence[StateInterval], index: int) -> bool:
    """Whether the wait `index` belongs to began with a wake-up (not a preemption)."""
    start = _chain_start(intervals, index)
    return intervals[start].woken_by is not None and (start == 0 or intervals[start - 1].state != ON_CPU)


def _wake(index: Intervals, intervals: Sequence[StateInterval], position: int, worker: int) -> _Wake:
    """The wake-up whose wait starts at `position`: its delay (and how much of it the CPU was held by
    another thread or throttled), and when the worker went back to sleep."""
    end, contended = position, 0
    while end < len(intervals) and _waiting(intervals[end]):
        interval = intervals[end]
        contended += (interval.ns if interval.state == THROTTLED else
                      _held_ns(index.holders(interval, interval.start_ns, interval.end_ns), interval.ns))
        end += 1
    running = intervals[end].start_ns if end < len(intervals) else intervals[end - 1].end_ns
    asleep = end
    while asleep < len(intervals) and intervals[asleep].state not in (BLOCKED, OTHER):
        asleep += 1
    back = intervals[asleep].start_ns if asleep < len(intervals) else intervals[-1].end_ns
    return _Wake(worker, intervals[position].start_ns, running - intervals[position].start_ns, back, contended)


def _add_holders(facts: RunFacts, holders: Sequence[Holder]):
    for holder in holders:
        facts.holders[(holder.pid, holder.tid, holder.comm)] += holder.ns


def join_run(index: Intervals, start_ns: int, end_ns: int, caller: int, threads: SessionThreads) -> RunFacts:
    """One run's facts (see the module's docstring)."""
    facts = RunFacts(start_ns, end_ns, caller)
    workers = set(threads.workers or ())
    caller_intervals = index.threads.get(caller, [])
    for position, interval, inside, share in index.overlapping(caller, start_ns, end_ns):
        facts.states[interval.state] += inside
        if _waiting(interval):
            _add_holders(facts, index.holders(interval, start_ns, end_ns))
        elif interval.state == BLOCKED and position + 1 < len(caller_intervals):
            following = caller_intervals[position + 1]
            if following.woken_by in workers and following.start_ns <= end_ns:
                facts.caller_waits_ns += inside
    for worker in sorted(workers):
        intervals = index.threads.get(worker, [])
        for position, interval, inside, share in index.overlapping(worker, start_ns, end_ns):
            if interval.state == ON_CPU:
                facts.worker_busy_ns += inside
            elif _waiting(interval):
                facts.worker_busy_ns += inside
                holders = index.holders(interval, start_ns, end_ns)
                _add_holders(facts, holders)
                woken = _woken(intervals, position)
                # Preempted or throttled: all of it; woken: the part another thread held its CPU (the rest
                # is the wake-up's own delay).
                facts.workers[interval.state] += (_held_ns(holders, inside)
                                                  if woken and interval.state == RUNNABLE else inside)
                if woken and _chain_start(intervals, position) == position and interval.start_ns >= start_ns:
                    facts.wakes.append(_wake(index, intervals, position, worker))
            elif (interval.state == BLOCKED and interval.start_ns >= start_ns and interval.end_ns <= end_ns
                  and position + 1 < len(intervals) and intervals[position + 1].woken_by is not None):
                facts.gaps_ns.append(interval.ns)
    _sections(facts, threads)
    return facts


def _sections(facts: RunFacts, threads: SessionThreads):
    """What the scheduler saw of the run's parallel sections, their count and the stragglers' lateness."""
    if threads.workers is None:
        facts.sections = UNKNOWN
        return
    if not threads.workers:
        facts.sections, facts.section_count, facts.straggler_ns = NO_POOL, 0, facts.caller_waits_ns
        return
    busy_share = facts.worker_busy_ns / max(1, facts.ns * len(threads.workers))
    if threads.spinning is not False and busy_share >= SPINNING_BUSY_SHARE:
        facts.sections = SPINNING     # workers that spin are not woken: their sections cannot be seen
        return
    if not facts.wakes:
        facts.sections, facts.section_count, facts.straggler_ns = UNUSED, 0, facts.caller_waits_ns
        return
    sections: List[List[_Wake]] = []
    for wake in sorted(facts.wakes, key=lambda w: w.at_ns):
        current = sections[-1] if sections else None
        if (current is None or wake.at_ns - current[0].at_ns > SECTION_GAP_NS
                or any(w.worker == wake.worker for w in current)):
            sections.append([wake])
        else:
            current.append(wake)
    lateness = 0
    for section in sections:
        if len(section) >= 2:
            ends = sorted(min(w.asleep_ns, facts.end_ns) for w in section)
            lateness += ends[-1] - ends[-2]
    facts.sections, facts.section_count = VISIBLE, len(sections)
    facts.straggler_ns = lateness + facts.caller_waits_ns


def _whose(holder: Tuple[int, int, str], pid: int, threads: SessionThreads) -> Tuple[str, Optional[int]]:
    holder_pid, tid, comm = holder
    if holder_pid != pid:
        return (PROFILER if comm in PROFILER_COMMS else OTHER_PROCESS), None
    session = threads.tid_session.get(tid)
    if session is None:
        return SAME_PROCESS, None
    return (OWN_SESSION if session == threads.session else OTHER_SESSION), session


def _held_by(holders: Counter, runs: int, pid: int, threads: SessionThreads, shown: Optional[int]) -> List[HeldBy]:
    result = []
    for holder, ns in holders.most_common(shown):
        whose, session = _whose(holder, pid, threads)
        result.append(HeldBy(holder[0], holder[1], holder[2], _ms(ns / runs), whose, session))
    return result


def top_holder(held_by: Sequence[HeldBy]) -> Optional[HeldBy]:
    """The holder a cause names: threads of one name (and kind) together (three hogs are one cause),
    the one that held most; a profiler only when nothing else held a quarter as much."""
    groups: Dict[Tuple[Optional[str], str], List[HeldBy]] = {}
    for holder in held_by:
        groups.setdefault((holder.whose, holder.comm), []).append(holder)
    ranked = sorted(groups.values(), key=lambda group: -sum(h.ms for h in group))
    if not ranked:
        return None
    most = sum(h.ms for h in ranked[0])
    chosen = next((group for group in ranked if group[0].whose != PROFILER
                   and sum(h.ms for h in group) >= PROFILER_OVER_SHARE * most), ranked[0])
    first = max(chosen, key=lambda h: h.ms)
    return HeldBy(first.pid, first.tid, first.comm, round(sum(h.ms for h in chosen), 3), first.whose, first.session,
                  threads=len(chosen))


def _ms(ns: float) -> float:
    return round(ns / 1e6, 3)


def _mean_states(facts: Sequence[RunFacts]) -> Dict[str, float]:
    return {state: _ms(sum(f.states[state] for f in facts) / len(facts)) for state in STATES}


def group(facts: Sequence[RunFacts], pid: int, threads: SessionThreads) -> RunGroup:
    """Mean figures per run of `facts`."""
    runs = len(facts)
    holders: Counter = Counter()
    for f in facts:
        holders.update(f.holders)
    statuses = Counter(f.sections for f in facts)
    status = statuses.most_common(1)[0][0]
    known = [f for f in facts if f.section_count is not None]
    visible = [f for f in facts if f.sections == VISIBLE]
    wakeup = None
    delays = sorted(w.delay_ns for f in visible for w in f.wakes)
    if delays:
        gaps = sorted(g for f in visible for g in f.gaps_ns)
        wakeup = WakeUps(per_run=round(len(delays) / len(visible), 2), mean_us=round(sum(delays) / len(delays) / 1e3, 1),
                         p95_us=round(_percentile(delays, 95) / 1e3, 1), max_us=round(delays[-1] / 1e3, 1),
                         ms=_ms(sum(delays) / len(visible)),
                         contended_ms=_ms(sum(w.contended_ns for f in visible for w in f.wakes) / len(visible)),
                         gap_p90_us=round(_percentile(gaps, 90) / 1e3, 1) if gaps else None,
                         gaps_ms=_ms(sum(gaps) / len(visible)))
    held_by = _held_by(holders, runs, pid, threads, None)
    return RunGroup(
        runs=runs, run_ms=_ms(sum(f.ns for f in facts) / runs), states_ms=_mean_states(facts),
        held_by=held_by[:HOLDERS_SHOWN], top_holder=top_holder(held_by),
        workers_ms={state: _ms(sum(f.workers[state] for f in facts) / runs) for state in (RUNNABLE, THROTTLED)},
        sections=status,
        sections_per_run=round(sum(f.section_count or 0 for f in known) / len(known), 2) if known else None,
        wakeup=wakeup,
        straggler_ms=_ms(sum(f.straggler_ns or 0 for f in known) / len(known)) if known else None,
        blocked_on_workers_ms=_ms(sum(f.caller_waits_ns for f in facts) / runs))


# -- causes -------------------------------------------------------------------------------------

def _growth(faster: RunGroup, slower: RunGroup) -> Dict[str, float]:
    """How much each cause's figure grew from `faster` to `slower`, ms per run."""
    def states(group: RunGroup, state):
        return group.states_ms.get(state, 0.0)

    def workers(group: RunGroup, state):
        return group.workers_ms.get(state, 0.0)

    def wakeup(group: RunGroup):
        """The wake-ups' own delay: waits for a CPU another thread held count as contention."""
        return group.wakeup.ms - group.wakeup.contended_ms if group.wakeup else 0.0

    # The caller's and the workers' waits overlap in time (a quota stalls them all at once; the caller
    # spins while a worker waits): the larger growth of the two, not their sum.
    return {
        "cpu-contention": max(states(slower, RUNNABLE) - states(faster, RUNNABLE),
                              workers(slower, RUNNABLE) - workers(faster, RUNNABLE)),
        "cpu-throttling": max(states(slower, THROTTLED) - states(faster, THROTTLED),
                              workers(slower, THROTTLED) - workers(faster, THROTTLED)),
        "wake-up-delay": wakeup(slower) - wakeup(faster),
        "straggler": (slower.straggler_ms or 0.0) - (faster.straggler_ms or 0.0),
        "blocked": (states(slower, BLOCKED) - slower.blocked_on_workers_ms)
        - (states(faster, BLOCKED) - faster.blocked_on_workers_ms),
        "other": states(slower, OTHER) - states(faster, OTHER),
        "on-cpu": states(slower, ON_CPU) - states(faster, ON_CPU),
    }


def _profilers_growth(faster: RunGroup, slower: RunGroup) -> float:
    """How much more per run profilers held the CPU the threads waited for in `slower` runs."""
    def held(group: RunGroup) -> float:
        return sum(h.ms for h in group.held_by if h.whose == PROFILER)
    return max(0.0, held(slower) - held(faster))


def _top_profiler(held_by: Sequence[HeldBy]) -> Optional[HeldBy]:
    return top_holder([h for h in held_by if h.whose == PROFILER])


def holder_name(holder: HeldBy) -> str:
    if holder.whose in (OTHER_PROCESS, PROFILER) and holder.threads > 1:
        return (f"{holder.comm} ({holder.threads} threads, the most pid {holder.pid}; "
                + ("a profiler)" if holder.whose == PROFILER else "other processes)"))
    if holder.whose == PROFILER:
        return f"{holder.comm} (pid {holder.pid}, a profiler: this recording's own or another)"
    if holder.whose == OTHER_PROCESS:
        return f"{holder.comm} (pid {holder.pid}, another process)"
    if holder.whose == OTHER_SESSION:
        return f"session {holder.session}'s thread {holder.tid} (this process)"
    if holder.whose == OWN_SESSION:
        return f"the session's own thread {holder.tid} (more threads than CPUs)"
    return f"thread {holder.tid} ({holder.comm}) of this process"


def explain(faster: RunGroup, slower: RunGroup, what: str = "slow runs", than: str = "typical") -> Cause:
    """Why `slower` runs took longer than `faster` ones: the figure that grew most."""
    excess = round(slower.run_ms - faster.run_ms, 3)
    head = f"{what} took {slower.run_ms:.2f} ms, {than} {faster.run_ms:.2f} ms"
    if excess < max(CAUSE_MIN_MS, CAUSE_MIN_SHARE * faster.run_ms):
        return Cause("none", excess, 0.0, f"{head}: within the runs' usual spread, no cause to name")
    growth = _growth(faster, slower)
    # The caller's time on CPU grows with any late worker (it spins at the end of each section): it is
    # the cause only when no scheduler figure explains the difference.
    on_cpu = growth.pop("on-cpu")
    cause, grown = max(growth.items(), key=lambda item: item[1])
    if grown < EXPLAINED_MIN_SHARE * excess:
        cause, grown = "on-cpu", on_cpu
    grown = round(grown, 3)
    if grown < EXPLAINED_MIN_SHARE * excess:
        return Cause("unknown", excess, grown, f"{head}; no scheduler figure grew by much: the scheduler does not "
                                               "explain the difference")
    holder = slower.top_holder if cause in ("cpu-contention", "cpu-throttling") else None
    if cause == "cpu-contention" and grown - _profilers_growth(faster, slower) < EXPLAINED_MIN_SHARE * excess:
        # without the profilers' share the wait explains little: the recording's own cost (or another
        # profiler's) is the holder, not a thread that happened to hold the CPU beside it
        holder = _top_profiler(slower.held_by) or holder
    who = "the caller" if slower.sections == NO_POOL else "the caller and its workers"
    details = {
        "cpu-contention": (f"{who} waited {grown:.2f} ms more per run for a CPU"
                           + (f", held mostly by {holder_name(holder)}: {holder.ms:.2f} ms per run" if holder else "")),
        "cpu-throttling": f"the CPU quota stalled {who} {grown:.2f} ms more per run",
        "wake-up-delay": f"waking sleeping pool workers took {grown:.2f} ms more per run",
        "straggler": f"the last worker of parallel sections finished {grown:.2f} ms more per run after the others",
        "blocked": f"the caller slept {grown:.2f} ms more per run on a lock or wait not tied to its workers "
                   "(another thread's lock, the GIL)",
        "other": f"the caller was off CPU {grown:.2f} ms more per run for other reasons (I/O, page faults, sleeps)",
        "on-cpu": (f"the caller was on CPU {grown:.2f} ms more per run: "
                   + ("its own work, or its spin at the end of parallel sections waiting for a worker (the workers "
                      "spin, so the scheduler cannot see their sections; perf's caller-spin share can)"
                      if slower.sections == SPINNING else
                      "more work per run (larger inputs, another code path, cold caches), not the scheduler")),
    }
    return Cause(cause, excess, grown, f"{head}: {details[cause]}", holder)


# -- groups, steps, a session's breakdown ---------------------------------------------------------

def split_groups(facts: Sequence[RunFacts]) -> Tuple[List[RunFacts], List[RunFacts]]:
    """(typical: runs between p40 and p60, slow: runs at or above p95 and at least the 5 slowest)."""
    ordered = sorted(facts, key=lambda f: f.ns)
    durations = [f.ns for f in ordered]
    low, high, p95 = _percentile(durations, 40), _percentile(durations, 60), _percentile(durations, 95)
    typical = [f for f in ordered if low <= f.ns <= high]
    slow = [f for f in ordered if f.ns >= p95]
    if len(slow) < SLOW_MIN_RUNS:
        slow = ordered[-SLOW_MIN_RUNS:]
    return typical, slow


def find_step(facts: Sequence[RunFacts]) -> Optional[int]:
    """The index (runs in time order) where latency stepped, or None when it scattered. The split
    maximises the difference of the sides' mean log durations weighted by their sizes (logs: a few
    runs ten times slower do not pull the split); it is a step when the slower side's median is well
    above the faster side's and most of its runs lie above the faster p90."""
    count = len(facts)
    side = max(STEP_MIN_SIDE, count // 10)
    if count < 2 * side:
        return None
    durations = [f.ns for f in facts]
    prefix = [0.0]
    for value in durations:
        prefix.append(prefix[-1] + math.log(max(value, 1)))
    best, best_score = None, 0.0
    for split in range(side, count - side + 1):
        before = prefix[split] / split
        after = (prefix[-1] - prefix[split]) / (count - split)
        score = abs(before - after) * math.sqrt(split * (count - split) / count)
        if score > best_score:
            best, best_score = split, score
    if best is None:
        return None
    first, second = sorted(durations[:best]), sorted(durations[best:])
    faster, slower = (first, second) if _percentile(first, 50) <= _percentile(second, 50) else (second, first)
    fast_median, slow_median = _percentile(faster, 50), _percentile(slower, 50)
    if slow_median < STEP_RATIO * fast_median or slow_median - fast_median < STEP_MIN_MS * 1e6:
        return None
    above = sum(1 for value in slower if value > _percentile(faster, 90)) / len(slower)
    return best if above >= STEP_SEPARATION else None


def _detail(f: RunFacts, window_open: int, pid: int, threads: SessionThreads) -> RunDetail:
    known = f.section_count is not None
    return RunDetail(start_s=round((f.start_ns - window_open) / 1e9, 3), run_ms=_ms(f.ns),
                     states_ms={state: _ms(f.states[state]) for state in STATES},
                     held_by=_held_by(f.holders, 1, pid, threads, 3),
                     workers_ms={state: _ms(f.workers[state]) for state in (RUNNABLE, THROTTLED)},
                     wakeup_ms=_ms(sum(w.delay_ns for w in f.wakes)) if f.sections == VISIBLE else None,
                     straggler_ms=_ms(f.straggler_ns or 0) if known else None)


def why_not(timeline: Optional[SchedTimeline], spans: Iterable) -> Optional[str]:
    """Why a session's runs cannot be broken down (None: they can)."""
    if timeline is None:
        return "no scheduler events were recorded in this run"
    spans = list(spans)
    if not spans:
        return "no run() was timed in the window"
    joined = [span for span in spans if span.tid in timeline.threads]
    if not joined:
        return (f"the scheduler events hold none of the threads that called run() ({', '.join(sorted({str(s.tid) for s in spans}))}"
                f" of process {timeline.pid})")
    if len(joined) < MIN_RUNS:
        return f"{len(joined)} run(s) in the window: at least {MIN_RUNS} are needed to compare typical and slow runs"
    return None


def session_breakdown(timeline: SchedTimeline, spans: Iterable, threads: SessionThreads) -> Optional[LatencyBreakdown]:
    """The latency breakdown of one session's runs (RunSpan: tid, start s, seconds; monotonic clock)."""
    spans = sorted(spans, key=lambda span: span.start)
    if why_not(timeline, spans) is not None:
        return None
    index = Intervals(timeline)
    facts = []
    for span in spans:
        if span.tid not in timeline.threads:
            continue
        start = int(round(span.start * 1e9))
        facts.append(join_run(index, start, start + int(round(span.seconds * 1e9)), span.tid, threads))
    pid = timeline.pid
    typical_runs, slow_runs = split_groups(facts)
    typical, slow = group(typical_runs, pid, threads), group(slow_runs, pid, threads)
    breakdown = LatencyBreakdown(typical=typical, slow=slow, cause=explain(typical, slow),
                                 workers=sorted(threads.workers) if threads.workers is not None else None,
                                 source=timeline.source, notes=list(timeline.notes))
    breakdown.slow_runs = [_detail(f, timeline.window[0], pid, threads)
                           for f in sorted(slow_runs, key=lambda f: -f.ns)[:SLOW_RUNS_SHOWN]]
    split = find_step(facts)
    if split is not None:
        before, after = group(facts[:split], pid, threads), group(facts[split:], pid, threads)
        faster, slower = (before, after) if before.run_ms <= after.run_ms else (after, before)
        what, than = ("runs before", "after") if slower is before else ("runs after", "before")
        at_s = round((facts[split].start_ns - timeline.window[0]) / 1e9, 3)
        breakdown.step = Step(at_s, before, after, explain(faster, slower, f"{what} {at_s:.1f} s", than))
    profilers = sum(h.ms for h in slow.held_by if h.whose == PROFILER)
    waited = slow.states_ms[RUNNABLE] + slow.workers_ms.get(RUNNABLE, 0.0)
    if waited and profilers >= PROFILER_NOTE_SHARE * waited:
        names = ", ".join(sorted({h.comm for h in slow.held_by if h.whose == PROFILER}))
        breakdown.notes.append(f"profilers ({names}: this recording's own, or another on the machine) held the CPU "
                               f"{profilers:.2f} ms of the {waited:.2f} ms the slow runs' threads waited for one: part "
                               "of the wait is the cost of recording")
    skipped = len(spans) - len(facts)
    if skipped:
        breakdown.notes.append(f"{skipped} run(s) on threads the scheduler events do not hold were left out")
    if timeline.lost_events:
        breakdown.notes.append(f"the kernel dropped {timeline.lost_events} scheduler events: states around them "
                               "are approximate")
    if threads.workers is None:
        breakdown.notes.append("the session's pool workers are not known (not tied to it): only the caller's "
                               "states are joined; parallel sections are unknown")
    return breakdown
