"""The scheduler lines of the recording's BPF program output (bpf.py) -> SchedTimeline.

The output is bpftrace's `-f json`, or the same lines written by the compiled program's
loader (compiled/loader.c): printf lines (S, H, P, see bpf.py), the futex part's maps,
`lost_events` records, and at exit the maps, among them the episodes still open at the
window's close (@out, @wake_ns, @waker, @wcpu).
"""
import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..futex.counts import json_records
from .bpf import KIND_BITS, KIND_DEAD, KIND_FUTEX, KIND_NEW, KIND_OTHER, KIND_PREEMPTED, KIND_THROTTLED
from .timeline import (BLOCKED, ON_CPU, OTHER, RUNNABLE, THROTTLED, Holder, SchedTimeline, StateInterval,
                       ThrottledPeriod)

SOURCE = "bpftrace"      # the producer, when the recording does not say (recorded before the compiled one)
OFF_CPU_STATE = {KIND_FUTEX: BLOCKED, KIND_OTHER: OTHER}


@dataclass
class Episode:
    """One stretch off CPU of a thread of the process: left at out_ns (`kind`), woken at
    wake_ns (0: not woken) by `waker` onto wake_cpu, back on CPU in_cpu at in_ns (None: not
    back before the window closed)."""
    tid: int
    out_ns: int
    kind: int
    wake_ns: int = 0
    waker: int = 0
    wake_cpu: int = -1
    in_ns: Optional[int] = None
    in_cpu: Optional[int] = None
    comm: str = ""


@dataclass
class HolderStretch:
    cpu: int
    pid: int
    tid: int
    start_ns: int
    end_ns: int
    comm: str


@dataclass
class SchedEvents:
    """What the program printed, as read."""
    episodes: List[Episode] = field(default_factory=list)
    holders: List[HolderStretch] = field(default_factory=list)
    period_timer_ns: List[int] = field(default_factory=list)
    window: Optional[Tuple[int, int]] = None
    lost_events: int = 0
    complete: bool = False       # bpftrace printed its maps at exit (the episodes open at the close)

    def counts(self) -> Dict[str, int]:
        return {"episodes": len(self.episodes), "holder_stretches": len(self.holders),
                "period_timer": len(self.period_timer_ns), "lost": self.lost_events}


def _printf_line(text, events):
    fields = text.split()
    if not fields:
        return
    try:
        if fields[0] == "S" and len(fields) >= 9:
            tid, out_ns, kind, wake_ns, waker, wake_cpu, in_ns, in_cpu = (int(value) for value in fields[1:9])
            events.episodes.append(Episode(tid, out_ns, kind, wake_ns, waker, wake_cpu, in_ns, in_cpu,
                                           " ".join(fields[9:])))
        elif fields[0] == "H" and len(fields) >= 6:
            cpu, pid, tid, start, end = (int(value) for value in fields[1:6])
            events.holders.append(HolderStretch(cpu, pid, tid, start, end, " ".join(fields[6:])))
        elif fields[0] == "P" and len(fields) == 2:
            events.period_timer_ns.append(int(fields[1]))
    except ValueError:
        pass    # a line cut short by a killed bpftrace


def read_events(lines) -> SchedEvents:
    events = SchedEvents()
    maps: Dict[str, Any] = {}
    for record in json_records(lines):
        kind = record.get("type")
        if kind == "printf":
            _printf_line(str(record.get("data", "")), events)
        elif kind in ("map", "stats"):
            maps.update(record.get("data") or {})
        elif kind == "lost_events":
            events.lost_events += int((record.get("data") or {}).get("events", 0))
    opened, closed = maps.get("@window_open_ns"), maps.get("@window_close_ns")
    if isinstance(opened, int) and isinstance(closed, int) and opened and closed > opened:
        events.window = (opened, closed)
    open_out = maps.get("@out")
    events.complete = isinstance(open_out, dict)
    if isinstance(open_out, dict):
        wake_ns, waker, wcpu = (maps.get(name) or {} for name in ("@wake_ns", "@waker", "@wcpu"))
        for key, packed in open_out.items():
            tid = int(key)
            events.episodes.append(Episode(
                tid, packed >> KIND_BITS, packed & ((1 << KIND_BITS) - 1), int(wake_ns.get(key, 0)),
                int(waker.get(key, 0)), int(wcpu.get(key, 0)) - 1))
    return events


def _throttled_end(start_ns, limit_ns, period_timer_ns):
    """The first refill of the quota (the period timer) after `start_ns`, else `limit_ns`."""
    index = bisect.bisect_right(period_timer_ns, start_ns)
    if index < len(period_timer_ns) and period_timer_ns[index] < limit_ns:
        return period_timer_ns[index]
    return limit_ns


class _Holders:
    """The holder stretches per CPU, for the runnable intervals to take their overlaps."""

    def __init__(self, stretches):
        self.by_cpu: Dict[int, List[HolderStretch]] = defaultdict(list)
        for stretch in sorted(stretches, key=lambda s: s.start_ns):
            self.by_cpu[stretch.cpu].append(stretch)
        self.starts = {cpu: [s.start_ns for s in items] for cpu, items in self.by_cpu.items()}
        self.longest = max((s.end_ns - s.start_ns for s in stretches), default=0)

    def during(self, cpus, start_ns, end_ns) -> List[Holder]:
        totals: Dict[Tuple[int, int, str], int] = defaultdict(int)
        for cpu in set(c for c in cpus if c is not None and c >= 0):
            items, starts = self.by_cpu.get(cpu, []), self.starts.get(cpu, [])
            index = bisect.bisect_left(starts, start_ns - self.longest)
            while index < len(items) and items[index].start_ns < end_ns:
                stretch = items[index]
                overlap = min(end_ns, stretch.end_ns) - max(start_ns, stretch.start_ns)
                if overlap > 0:
                    totals[(stretch.pid, stretch.tid, stretch.comm)] += overlap
                index += 1
        return [Holder(pid, tid, comm, ns) for (pid, tid, comm), ns in
                sorted(totals.items(), key=lambda item: -item[1])]


def build_timeline(events: SchedEvents, pid: int, window: Tuple[int, int],
                   threads_running: Optional[Dict[int, bool]] = None, source: Optional[str] = None) -> SchedTimeline:
    """Per-thread state intervals clipped to `window`. `threads_running`: threads of the process
    without any episode, and whether /proc showed them running through the window (a thread
    that never left its CPU prints nothing)."""
    opened, closed = window
    timeline = SchedTimeline(source=source or SOURCE, window=window, pid=pid, lost_events=events.lost_events,
                             throttling_known=True)
    holders = _Holders(events.holders)
    timers = sorted(events.period_timer_ns)
    throttled_by_cpu: Dict[int, List[Tuple[int, int]]] = defaultdict(list)
    by_thread: Dict[int, List[Episode]] = defaultdict(list)
    for episode in events.episodes:
        by_thread[episode.tid].append(episode)

    for tid, episodes in by_thread.items():
        episodes.sort(key=lambda e: (e.in_ns is None, e.in_ns or 0, e.out_ns))
        intervals: List[StateInterval] = []

        def add(state, start, end, cpu=None, woken_by=None, holder_cpus=()):
            start, end = max(start, opened), min(end, closed)
            if end <= start:
                return
            found = holders.during(holder_cpus, start, end) if holder_cpus else []
            intervals.append(StateInterval(tid, state, start, end, cpu, woken_by or None, found))

        on_since: Optional[int] = None
        on_cpu: Optional[int] = None
        first = True
        for episode in episodes:
            if episode.comm:
                timeline.comms[tid] = episode.comm
            if on_since is not None or (first and episode.out_ns >= opened and episode.kind != KIND_NEW):
                add(ON_CPU, opened if on_since is None else on_since, episode.out_ns, on_cpu)
            first = False
            end = episode.in_ns if episode.in_ns is not None else closed
            if episode.kind == KIND_DEAD:
                on_since = None
                break
            waited_cpus = (episode.wake_cpu, episode.in_cpu)
            if episode.kind in (KIND_PREEMPTED, KIND_NEW):
                add(RUNNABLE, episode.out_ns, end, episode.in_cpu, holder_cpus=waited_cpus)
            elif episode.kind == KIND_THROTTLED:
                refill = _throttled_end(episode.out_ns, end, timers)
                add(THROTTLED, episode.out_ns, refill, on_cpu)
                add(RUNNABLE, refill, end, episode.in_cpu, holder_cpus=waited_cpus)
                if on_cpu is not None:
                    throttled_by_cpu[on_cpu].append((episode.out_ns, refill))
            else:
                state = OFF_CPU_STATE.get(episode.kind, OTHER)
                woken = episode.wake_ns if episode.wake_ns and episode.wake_ns < end else None
                add(state, episode.out_ns, woken or end)
                if woken:
                    add(RUNNABLE, woken, end, episode.in_cpu if episode.in_cpu is not None else episode.wake_cpu,
                        woken_by=episode.waker, holder_cpus=waited_cpus)
            if episode.in_ns is None:
                on_since = None
                break
            on_since, on_cpu = episode.in_ns, episode.in_cpu
        if on_since is not None:
            add(ON_CPU, on_since, closed, on_cpu)
        if intervals:
            timeline.threads[tid] = intervals

    for tid, running in (threads_running or {}).items():
        if tid not in by_thread:
            timeline.threads[tid] = [StateInterval(tid, ON_CPU if running else OTHER, opened, closed)]
            if not running:
                timeline.notes.append(f"thread {tid} left no scheduler event in the window and did not run: "
                                      "off CPU since before the recording named the process, reason unknown (other)")
    timeline.throttled = _merge_periods(throttled_by_cpu, opened, closed)
    if events.lost_events:
        timeline.notes.append(f"the kernel dropped {events.lost_events} scheduler events (the BPF program's buffer "
                              "was full): "
                              "some intervals are missing or merged")
    if not events.complete:
        timeline.notes.append("the BPF program stopped before printing the episodes open at the window's close: "
                              "threads off CPU at the close end at their last return to a CPU")
    return timeline


def _merge_periods(by_cpu, opened, closed) -> List[ThrottledPeriod]:
    periods = []
    for cpu, spans in by_cpu.items():
        current: Optional[List[int]] = None
        for start, end in sorted(spans):
            start, end = max(start, opened), min(end, closed)
            if end <= start:
                continue
            if current is not None and start <= current[1]:
                current[1] = max(current[1], end)
                continue
            if current is not None:
                periods.append(ThrottledPeriod(current[0], current[1], cpu))
            current = [start, end]
        if current is not None:
            periods.append(ThrottledPeriod(current[0], current[1], cpu))
    return sorted(periods, key=lambda p: (p.start_ns, p.cpu if p.cpu is not None else -1))
