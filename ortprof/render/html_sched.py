"""Thread-state lanes and per-run breakdowns of the HTML report, from the sched signal's timeline.

With spinning off a pool worker changes state thousands of times a second, far more than a
chart can draw, so the states are reduced here: each lane is the window cut into at most
STATE_BINS bins, each bin the share of its time the thread spent in each state, and runs
of equal bins merged. Every run() gets its caller's ms per state, who held the CPU while
the caller or its session's workers were runnable, and the workers' wake-up delays; the
runs (slowest first) also get a strip of their own threads at RUN_STRIP_BINS bins, until
the strips reach RUN_STRIP_BUDGET bytes of JSON. So the embedded data is bounded by
STATE_LANES x STATE_BINS bins, RUN_STRIP_BUDGET bytes of strips, and a few numbers per run.
"""
import json
from bisect import bisect_left, bisect_right
from collections import defaultdict

from ..signals.sched.timeline import BLOCKED, ON_CPU, RUNNABLE, STATES, THROTTLED, SchedTimeline

STATE_BINS = 1500               # bins across the window (about one per pixel of the widest chart)...
MIN_STATE_BIN_SECONDS = 0.0005  # ...each at least 0.5 ms
STATE_LANES = 16                # threads with a state lane at most (callers, then pool workers, busiest first)
RUN_STRIP_BINS = 120            # bins across one run()'s strip
RUN_STRIP_THREADS = 5           # the caller and at most 4 of its session's workers
RUN_STRIP_BUDGET = 250_000      # bytes of JSON for all runs' strips
HOLDERS_SHOWN = 3
STATE_LABELS = {ON_CPU: "running", RUNNABLE: "runnable (waiting for a CPU)", THROTTLED: "throttled (cgroup quota)",
                BLOCKED: "blocked (futex)", "other": "other off-CPU (I/O, sleep, page faults)"}
STATE_COLORS = {ON_CPU: "#43a047", RUNNABLE: "#fb8c00", THROTTLED: "#d81b60", BLOCKED: "#90a4ae",
                "other": "#d7ccc8"}
WORKER_ROLES = ("intra-op-worker", "inter-op-worker")
_INDEX = {state: i for i, state in enumerate(STATES)}


def missing_reason(empty_sections):
    """Why a report has no scheduler states: the sched signal's empty-section reason."""
    from ..signals import SIGNALS
    for signal in SIGNALS:
        if signal.name == "sched":
            for section in signal.report_sections:
                if empty_sections.get(section):
                    return empty_sections[section]
    return (empty_sections.get("latency_breakdown")
            or "the run has no scheduler events (recorded without the sched signal)")


def binned_states(intervals, start_ns, bin_ns, bins):
    """[[first bin, bin count, state index]] for bins wholly in one state, [[first, count, % per
    state...]] for mixed ones; equal neighbours merged, bins the thread did not live in left out."""
    shares = [[0] * len(STATES) for _ in range(bins)]
    end_ns = start_ns + bin_ns * bins
    for interval in intervals:
        a, b = max(interval.start_ns, start_ns), min(interval.end_ns, end_ns)
        if b <= a:
            continue
        state = _INDEX.get(interval.state, _INDEX["other"])
        first, last = (a - start_ns) // bin_ns, min(bins - 1, (b - 1 - start_ns) // bin_ns)
        for index in range(first, last + 1):
            low = max(a, start_ns + index * bin_ns)
            high = min(b, start_ns + (index + 1) * bin_ns)
            shares[index][state] += high - low
    encoded = []
    previous = None
    for index, ns in enumerate(shares):
        total = sum(ns)
        if not total:
            previous = None
            continue
        pct = [round(100 * v / total) for v in ns]
        key = [pct.index(100)] if 100 in pct else pct
        if previous is not None and previous[2:] == key and previous[0] + previous[1] == index:
            previous[1] += 1
            continue
        previous = [index, 1] + key
        encoded.append(previous)
    return encoded


class _Clipper:
    """states_between for many runs: each thread's intervals are cut to the run by bisection first."""

    def __init__(self, timeline):
        self.timeline = timeline
        self.starts = {tid: [i.start_ns for i in intervals] for tid, intervals in timeline.threads.items()}
        self.ends = {tid: [i.end_ns for i in intervals] for tid, intervals in timeline.threads.items()}

    def between(self, tid, start_ns, end_ns):
        intervals = self.timeline.threads.get(tid)
        if not intervals:
            return []
        first = bisect_right(self.ends[tid], start_ns)
        last = bisect_left(self.starts[tid], end_ns)
        part = SchedTimeline(self.timeline.source, self.timeline.window, self.timeline.pid,
                             threads={tid: intervals[first:last]})
        return part.states_between(tid, start_ns, end_ns)


def _ms(ns):
    return round(ns / 1e6, 3)


def run_breakdown(clipper, run, workers):
    """{states: caller ms per state, held: [[comm, pid, tid, ms]], workers: [[tid, on-CPU ms, runnable ms,
    blocked ms, wake-ups, mean wake-up ms, max wake-up ms]]} of one run, or None outside the timeline."""
    start_ns = int(round(run.start * 1e9))
    end_ns = start_ns + int(round(run.seconds * 1e9))
    caller = clipper.between(run.tid, start_ns, end_ns)
    if not caller:
        return None
    states = [0] * len(STATES)
    held = defaultdict(int)
    for interval in caller:
        states[_INDEX.get(interval.state, _INDEX["other"])] += interval.ns
        for holder in interval.holders:
            held[(holder.comm, holder.pid, holder.tid)] += holder.ns
    worker_rows = []
    for tid in workers:
        intervals = clipper.between(tid, start_ns, end_ns)
        if not intervals:
            continue
        ns = defaultdict(int)
        wakeups = []
        for interval in intervals:
            ns[interval.state] += interval.ns
            if interval.state == RUNNABLE and interval.woken_by is not None:
                wakeups.append(interval.ns)
            for holder in interval.holders:
                held[(holder.comm, holder.pid, holder.tid)] += holder.ns
        worker_rows.append([tid, _ms(ns[ON_CPU]), _ms(ns[RUNNABLE] + ns[THROTTLED]), _ms(ns[BLOCKED]), len(wakeups),
                            _ms(sum(wakeups) / len(wakeups)) if wakeups else None,
                            _ms(max(wakeups)) if wakeups else None])
    top = sorted(held.items(), key=lambda item: -item[1])[:HOLDERS_SHOWN]
    return {"states": [_ms(v) for v in states],
            "held": [[comm, pid, tid, _ms(ns)] for (comm, pid, tid), ns in top if ns > 0],
            "workers": worker_rows}


def _workers_by_session(report):
    """session -> its pool workers' tids (those its latency breakdown joined, else those the hook tied
    to it), and the tids of every pool worker."""
    by_session = defaultdict(list)
    for worker in report.get("pool_workers") or ():
        by_session[worker["session"]].append(worker["tid"])
    for session in report.get("sessions", []):
        joined = (session.get("latency_breakdown") or {}).get("workers")
        if joined is not None:
            by_session[session["session"]] = list(joined)
    every = [row["tid"] for row in report.get("threads", []) if row["role"] in WORKER_ROLES]
    every += [tid for tids in by_session.values() for tid in tids if tid not in every]
    return by_session, every


def sched_lanes(timeline, report, runs, origin, seconds, lane_order):
    """The `sched` part of the page data: state lanes of the callers and pool workers, each run's
    breakdown (beside the timeline's `runs`, same order) and its strip within the budget."""
    start_ns = int(round(origin * 1e9))
    bins = max(1, min(STATE_BINS, int(seconds / MIN_STATE_BIN_SECONDS)))
    bin_ns = max(1, int(seconds * 1e9 / bins) + 1)
    by_session, every_worker = _workers_by_session(report)
    callers = {run.tid for run in runs} | {tid for s in report.get("sessions", []) for tid in s.get("caller_tids") or ()}
    wanted = callers | set(every_worker)
    order = {tid: i for i, tid in enumerate(lane_order)}
    chosen = sorted((tid for tid in wanted if timeline.threads.get(tid)),
                    key=lambda tid: (tid not in callers, order.get(tid, len(order)), tid))
    lanes = {str(tid): binned_states(timeline.threads[tid], start_ns, bin_ns, bins) for tid in chosen[:STATE_LANES]}
    clipper = _Clipper(timeline)
    breakdowns = []
    for run in runs:
        workers = by_session[run.session] if run.session in by_session else every_worker
        breakdowns.append(run_breakdown(clipper, run, workers))
    _add_strips(clipper, runs, breakdowns)
    notes = list(timeline.notes)
    if len(chosen) > STATE_LANES:
        notes.append(f"state lanes for {STATE_LANES} of {len(chosen)} callers and pool workers")
    if timeline.lost_events:
        notes.append(f"the kernel dropped {timeline.lost_events} scheduler events: some states are missing")
    return {"states": [{"id": s, "label": STATE_LABELS[s], "color": STATE_COLORS[s]} for s in STATES],
            "source": timeline.source, "bin_seconds": bin_ns / 1e9, "lanes": lanes, "runs": breakdowns,
            "throttling_known": timeline.throttling_known, "notes": notes}


def _add_strips(clipper, runs, breakdowns):
    """Each run's threads at RUN_STRIP_BINS bins, slowest runs first, until RUN_STRIP_BUDGET bytes."""
    budget = RUN_STRIP_BUDGET
    for index in sorted(range(len(runs)), key=lambda i: -runs[i].seconds):
        run, breakdown = runs[index], breakdowns[index]
        if breakdown is None:
            continue
        start_ns = int(round(run.start * 1e9))
        bin_ns = max(1, int(run.seconds * 1e9 / RUN_STRIP_BINS) + 1)
        tids = [run.tid] + [row[0] for row in breakdown["workers"]][:RUN_STRIP_THREADS - 1]
        end_ns = start_ns + bin_ns * RUN_STRIP_BINS
        strip = {"bin_seconds": bin_ns / 1e9,
                 "lanes": [[tid, binned_states(clipper.between(tid, start_ns, end_ns), start_ns, bin_ns,
                                               RUN_STRIP_BINS)] for tid in tids]}
        size = len(json.dumps(strip, separators=(",", ":")))
        if size > budget:
            break
        budget -= size
        breakdown["strip"] = strip
