"""Thread-state lanes and per-run breakdowns of the HTML report, from the sched signal's timeline.

With spinning off a pool worker changes state thousands of times a second, far more than a
chart can draw, so the states are reduced here: each lane is the window cut into at most
STATE_BINS bins, each bin the share of its time the thread spent in each state, and runs
of equal bins merged. Every run() is joined with the states as its session's breakdown joins
them (sched.breakdown.join_run): its caller's ms per state, who held the CPU while the caller
or its session's workers were runnable, the workers' wake-up delays and stragglers; the
runs (slowest first) also get a strip of their own threads at RUN_STRIP_BINS bins, until
the strips reach RUN_STRIP_BUDGET bytes of JSON. So the embedded data is bounded by
STATE_LANES x STATE_BINS bins, RUN_STRIP_BUDGET bytes of strips, and a few numbers per run.
"""
import json
from collections import defaultdict
from types import SimpleNamespace

from ..signals.sched.breakdown import Intervals, SessionThreads, join_run
from ..signals.sched.report import _spinning as spinning_of
from ..signals.sched.timeline import BLOCKED, ON_CPU, RUNNABLE, STATES, THROTTLED

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
            or "the run has no scheduler events (ortprof record --sched records them)")


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


def _ms(ns):
    return round(ns / 1e6, 3)


def run_breakdown(index, run, threads):
    """One run joined with the scheduler as the session's breakdown joins it (sched.breakdown.join_run):
    {states: the caller's ms per state, held: [[comm, pid, tid, ms]], workers: [[tid, wake-ups, mean and max
    wake-up ms]], preempted_ms / throttled_ms: the workers', sections: what the scheduler saw of its
    parallel sections, section_count, straggler_ms}; None for a run outside the timeline."""
    start_ns = int(round(run.start * 1e9))
    end_ns = start_ns + int(round(run.seconds * 1e9))
    if not any(True for _ in index.overlapping(run.tid, start_ns, end_ns)):
        return None
    facts = join_run(index, start_ns, end_ns, run.tid, threads)
    delays = defaultdict(list)
    for wake in facts.wakes:
        delays[wake.worker].append(wake.delay_ns)
    return {"states": [_ms(facts.states[state]) for state in STATES],
            "held": [[comm, pid, tid, _ms(ns)] for (pid, tid, comm), ns in facts.holders.most_common(HOLDERS_SHOWN)
                     if ns > 0],
            "workers": [[tid, len(delays[tid]), _ms(sum(delays[tid]) / len(delays[tid])) if delays[tid] else None,
                         _ms(max(delays[tid])) if delays[tid] else None] for tid in threads.workers or ()],
            "preempted_ms": _ms(facts.workers[RUNNABLE]), "throttled_ms": _ms(facts.workers[THROTTLED]),
            "sections": facts.sections, "section_count": facts.section_count,
            "straggler_ms": None if facts.straggler_ns is None else _ms(facts.straggler_ns)}


def session_threads(report):
    """session -> SessionThreads, as the session's breakdown joined them: its pool workers (those its
    breakdown names, else those the hook tied to it, else with one session every pool worker; None:
    not known), whether they spin, and each pool worker's and caller's session."""
    sessions = report.get("sessions", [])
    tied = defaultdict(list)
    tid_session = {}
    for worker in report.get("pool_workers") or ():
        tied[worker["session"]].append(worker["tid"])
        tid_session[worker["tid"]] = worker["session"]
    for session in sessions:
        for tid in session.get("caller_tids") or ():
            tid_session.setdefault(tid, session["session"])
    every = sorted(row["tid"] for row in report.get("threads", []) if row["role"] in WORKER_ROLES)
    threads = {}
    for session in sessions:
        joined = (session.get("latency_breakdown") or {}).get("workers")
        workers = joined if joined is not None else tied.get(session["session"]) or (every if len(sessions) == 1
                                                                                       else None)
        threads[session["session"]] = SessionThreads(session["session"], workers, spinning_of(SimpleNamespace(**session)),
                                                     tid_session)
    return threads


def sched_lanes(timeline, report, runs, origin, seconds, lane_order):
    """The `sched` part of the page data: state lanes of the callers and pool workers, each run's
    breakdown (beside the timeline's `runs`, same order) and its strip within the budget."""
    start_ns = int(round(origin * 1e9))
    bins = max(1, min(STATE_BINS, int(seconds / MIN_STATE_BIN_SECONDS)))
    bin_ns = max(1, int(seconds * 1e9 / bins) + 1)
    threads = session_threads(report)
    callers = {run.tid for run in runs} | {tid for s in report.get("sessions", []) for tid in s.get("caller_tids") or ()}
    wanted = callers | {tid for t in threads.values() for tid in t.workers or ()}
    wanted |= {row["tid"] for row in report.get("threads", []) if row["role"] in WORKER_ROLES}
    order = {tid: i for i, tid in enumerate(lane_order)}
    chosen = sorted((tid for tid in wanted if timeline.threads.get(tid)),
                    key=lambda tid: (tid not in callers, order.get(tid, len(order)), tid))
    lanes = {str(tid): binned_states(timeline.threads[tid], start_ns, bin_ns, bins) for tid in chosen[:STATE_LANES]}
    index = Intervals(timeline)
    unknown = SessionThreads(-1, None, None)
    breakdowns = [run_breakdown(index, run, threads.get(run.session, unknown)) for run in runs]
    _add_strips(index, runs, breakdowns)
    notes = list(timeline.notes)
    if len(chosen) > STATE_LANES:
        notes.append(f"state lanes for {STATE_LANES} of {len(chosen)} callers and pool workers")
    if timeline.lost_events:
        notes.append(f"the kernel dropped {timeline.lost_events} scheduler events: some states are missing")
    return {"states": [{"id": s, "label": STATE_LABELS[s], "color": STATE_COLORS[s]} for s in STATES],
            "source": timeline.source, "bin_seconds": bin_ns / 1e9, "lanes": lanes, "runs": breakdowns,
            "throttling_known": timeline.throttling_known, "notes": notes}


def _add_strips(index, runs, breakdowns):
    """Each run's threads at RUN_STRIP_BINS bins, slowest runs first, until RUN_STRIP_BUDGET bytes."""
    budget = RUN_STRIP_BUDGET
    for position in sorted(range(len(runs)), key=lambda i: -runs[i].seconds):
        run, breakdown = runs[position], breakdowns[position]
        if breakdown is None:
            continue
        start_ns = int(round(run.start * 1e9))
        bin_ns = max(1, int(run.seconds * 1e9 / RUN_STRIP_BINS) + 1)
        tids = [run.tid] + [row[0] for row in breakdown["workers"]][:RUN_STRIP_THREADS - 1]
        end_ns = start_ns + bin_ns * RUN_STRIP_BINS
        strip = {"bin_seconds": bin_ns / 1e9,
                 "lanes": [[tid, binned_states([i for _, i, _, _ in index.overlapping(tid, start_ns, end_ns)],
                                               start_ns, bin_ns, RUN_STRIP_BINS)] for tid in tids]}
        size = len(json.dumps(strip, separators=(",", ":")))
        if size > budget:
            break
        budget -= size
        breakdown["strip"] = strip
