"""The latency breakdown (ortprof/signals/sched/breakdown.py) on scheduler timelines built run by run:
each cause on its own (contention by another process, by the process's other session's pool,
throttling, a straggler, wake-up delay) and none, the numbers checked against what was built.

The builder: each run lists what its caller and each worker did (state, microseconds, who woke it,
who held its CPU); the runs are laid out one after another with idle gaps between them, as the
capture hands them over (one interval per state, no gaps, in time order).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from ortprof.model.profile import RunSpan
from ortprof.signals.sched.breakdown import SessionThreads, session_breakdown, why_not
from ortprof.signals.sched.section import OTHER_PROCESS, OTHER_SESSION, OWN_SESSION
from ortprof.signals.sched.timeline import (BLOCKED, ON_CPU, OTHER, RUNNABLE, THROTTLED, Holder, SchedTimeline,
                                            StateInterval, ThrottledPeriod)

PID, CALLER = 4000, 4001
WINDOW_OPEN_NS = 5_000_000_000
US = 1000


@dataclass
class Seg:
    state: str
    us: float
    woken_by: Optional[int] = None
    held_by: Optional[Tuple[int, int, str]] = None    # (pid, tid, comm) holding the CPU all along


@dataclass
class RunPlan:
    caller: Sequence[Seg]
    workers: Dict[int, Sequence[Seg]] = field(default_factory=dict)   # from the run's start; the rest idle

    @property
    def us(self):
        return sum(seg.us for seg in self.caller)


class Builder:
    def __init__(self, workers=(), idle_worker_state=BLOCKED, gap_us=20_000, session=1, caller=CALLER, pid=PID):
        self.pid, self.caller, self.session, self.gap_us = pid, caller, session, gap_us
        self.workers, self.idle_worker_state = list(workers), idle_worker_state
        self.cpus = {caller: 0, **{worker: n + 1 for n, worker in enumerate(self.workers)}}   # each its own CPU
        self.threads: Dict[int, List[StateInterval]] = {caller: [], **{w: [] for w in self.workers}}
        self.now = WINDOW_OPEN_NS
        self.spans: List[RunSpan] = []
        self.throttled: List[ThrottledPeriod] = []

    def _append(self, tid, seg: Seg, start):
        end = start + int(seg.us * US)
        intervals = self.threads[tid]
        last = intervals[-1] if intervals else None
        if (last is not None and last.state == seg.state and seg.woken_by is None and seg.held_by is None
                and not last.holders and last.end_ns == start):
            last.end_ns = end          # one interval per state, as the capture writes them
        else:
            holders = [Holder(*seg.held_by, ns=end - start)] if seg.held_by else []
            intervals.append(StateInterval(tid, seg.state, start, end, cpu=self.cpus.get(tid, 0), woken_by=seg.woken_by,
                                           holders=holders))
        if seg.state == THROTTLED:
            self.throttled.append(ThrottledPeriod(start, end))
        return end

    def idle(self, us):
        self._append(self.caller, Seg(OTHER, us), self.now)
        for worker in self.workers:
            self._append(worker, Seg(self.idle_worker_state, us), self.now)
        self.now += int(us * US)

    def run(self, plan: RunPlan):
        self.idle(self.gap_us)
        start = self.now
        end = start
        for seg in plan.caller:
            end = self._append(self.caller, seg, end)
        for worker in self.workers:
            at = start
            for seg in plan.workers.get(worker, ()):
                at = self._append(worker, seg, at)
            assert at <= end, "a worker's plan runs past its run"
            if at < end:
                self._append(worker, Seg(self.idle_worker_state, (end - at) / US), at)
        self.spans.append(RunSpan(self.session, self.caller, start / 1e9, (end - start) / 1e9))
        self.now = end

    def timeline(self, extra_threads=None) -> SchedTimeline:
        self.idle(self.gap_us)
        threads = dict(self.threads)
        threads.update(extra_threads or {})
        return SchedTimeline(source="constructed", window=(WINDOW_OPEN_NS, self.now), pid=self.pid, threads=threads,
                             comms={tid: "python" for tid in threads}, throttled=list(self.throttled),
                             throttling_known=True)


def on_cpu(us):
    return Seg(ON_CPU, us)


HOG = (9100, 9100, "stress-ng")
WORKER, WORKER2, OTHER_WORKER, OTHER_CALLER = 4002, 4003, 4010, 4011


def runnable(us, held_by=HOG, woken_by=None):
    return Seg(RUNNABLE, us, woken_by=woken_by, held_by=held_by)


def breakdown_of(builder, workers=None, spinning=False, tid_session=None, extra_threads=None):
    threads = SessionThreads(builder.session, workers if workers is not None else builder.workers, spinning,
                             tid_session or {})
    timeline = builder.timeline(extra_threads)
    return session_breakdown(timeline, builder.spans, threads), timeline


def one_thread_runs(builder, count, slow_every, slow_plan, typical_us=3000):
    for index in range(count):
        builder.run(slow_plan if index % slow_every == slow_every - 1 else RunPlan([on_cpu(typical_us)]))


# -- one cause each ---------------------------------------------------------------------------------

def test_contention_by_another_process():
    """A one-thread session: one run in five waits 5 ms for its CPU, held by another process."""
    builder = Builder()
    one_thread_runs(builder, 40, 5, RunPlan([on_cpu(1500), runnable(5000), on_cpu(1500)]))
    breakdown, _ = breakdown_of(builder, workers=[])
    typical, slow = breakdown.typical, breakdown.slow
    assert typical.runs == 32 and typical.run_ms == 3.0
    assert typical.states_ms == {ON_CPU: 3.0, RUNNABLE: 0.0, THROTTLED: 0.0, BLOCKED: 0.0, OTHER: 0.0}
    assert typical.held_by == []
    assert slow.runs == 8 and slow.run_ms == 8.0
    assert slow.states_ms[ON_CPU] == 3.0 and slow.states_ms[RUNNABLE] == 5.0
    [holder] = slow.held_by
    assert (holder.pid, holder.tid, holder.comm, holder.ms, holder.whose) == (*HOG, 5.0, OTHER_PROCESS)
    cause = breakdown.cause
    assert cause.id == "cpu-contention" and cause.excess_ms == 5.0 and cause.explained_ms == 5.0
    assert cause.holder.comm == "stress-ng" and "stress-ng (pid 9100" in cause.detail
    # no pool: no sections, no wake-up, nothing late
    assert slow.sections == "no-pool" and slow.wakeup is None and slow.straggler_ms == 0.0
    assert len(breakdown.slow_runs) == 8 and breakdown.slow_runs[0].run_ms == 8.0
    assert breakdown.slow_runs[0].states_ms[RUNNABLE] == 5.0 and breakdown.slow_runs[0].held_by[0].ms == 5.0
    # the first slow run is the 5th: 5 idle gaps of 20 ms and 4 runs of 3 ms after the window opened
    assert sorted(run.start_s for run in breakdown.slow_runs)[0] == pytest.approx(5 * 0.020 + 4 * 0.003)


def test_contention_by_the_other_sessions_pool_worker():
    """Two sessions with their own pools in one process: session 2's worker keeps spinning on the CPU
    session 1's worker needs, so session 1's slow runs wait for it (the caller spins meanwhile)."""
    spinning_other = (PID, OTHER_WORKER, "python")
    builder = Builder(workers=[WORKER])
    for index in range(40):
        slow = index % 5 == 4
        wait = [runnable(4000, held_by=spinning_other)] if slow else []
        builder.run(RunPlan([on_cpu(7000 if slow else 3000)],
                            {WORKER: [Seg(RUNNABLE, 20, woken_by=CALLER), *wait, on_cpu(2500), Seg(BLOCKED, 100)]}))
    tid_session = {WORKER: 1, CALLER: 1, OTHER_WORKER: 2, OTHER_CALLER: 2}
    breakdown, _ = breakdown_of(builder, tid_session=tid_session)
    slow, typical = breakdown.slow, breakdown.typical
    # woken, then 4 ms waiting for the CPU the other worker held: contention, not the wake-up's own delay
    assert slow.workers_ms[RUNNABLE] == 4.0 and typical.workers_ms[RUNNABLE] == 0.0
    assert slow.wakeup.ms == 4.02 and slow.wakeup.contended_ms == 4.0
    holder = slow.held_by[0]
    assert (holder.tid, holder.whose, holder.session, holder.ms) == (OTHER_WORKER, OTHER_SESSION, 2, 4.0)
    assert breakdown.cause.id == "cpu-contention" and breakdown.cause.explained_ms == 4.0
    assert "session 2's thread 4010" in breakdown.cause.detail
    # the worker's wake-ups are seen (it sleeps between runs): one section per run, 20 us each
    assert typical.sections == "visible" and typical.sections_per_run == 1.0
    assert typical.wakeup.mean_us == 20.0 and typical.wakeup.per_run == 1.0


def test_own_session_threads_holding_the_cpu_are_named_as_its_own():
    builder = Builder(workers=[WORKER])
    for index in range(20):
        slow = index % 4 == 3
        caller = [on_cpu(1000), runnable(3000, held_by=(PID, WORKER, "python")), on_cpu(2000)] if slow else [on_cpu(3000)]
        builder.run(RunPlan(caller))
    breakdown, _ = breakdown_of(builder, tid_session={WORKER: 1, CALLER: 1})
    assert breakdown.slow.held_by[0].whose == OWN_SESSION
    assert "more threads than CPUs" in breakdown.cause.detail


def test_throttling():
    """The cgroup's quota runs out during one run in five: caller and worker throttled 4 ms."""
    builder = Builder(workers=[WORKER])
    for index in range(30):
        slow = index % 5 == 4
        stall = [Seg(THROTTLED, 4000)] if slow else []
        builder.run(RunPlan([on_cpu(1000), *stall, on_cpu(2000)],
                            {WORKER: [Seg(RUNNABLE, 30, woken_by=CALLER), on_cpu(500), *stall, on_cpu(400),
                                      Seg(BLOCKED, 100)]}))
    breakdown, timeline = breakdown_of(builder)
    assert breakdown.slow.states_ms[THROTTLED] == 4.0 and breakdown.typical.states_ms[THROTTLED] == 0.0
    assert breakdown.slow.workers_ms[THROTTLED] == 4.0
    assert breakdown.cause.id == "cpu-throttling" and breakdown.cause.explained_ms == 4.0   # at the same time
    assert breakdown.cause.excess_ms == 4.0
    assert len(timeline.throttled) == 12      # each stall once for the caller, once for the worker


def _section(worker_delay_us, work_us, worker, gap_us=0):
    return [Seg(BLOCKED, gap_us)] * bool(gap_us) + [Seg(RUNNABLE, worker_delay_us, woken_by=CALLER), on_cpu(work_us),
                                                      Seg(BLOCKED, 10)]


def _sections_of(shares_us, delay_us=20, tail_us=10):
    """Worker -> segments for sections that wake every worker at once and end when the last one is done:
    `shares_us` is one {worker: its share's us} per section."""
    plans: Dict[int, list] = {worker: [] for worker in shares_us[0]}
    for shares in shares_us:
        section_us = delay_us + max(shares.values()) + tail_us
        for worker, share in shares.items():
            plans[worker] += [Seg(RUNNABLE, delay_us, woken_by=CALLER), on_cpu(share),
                              Seg(BLOCKED, section_us - delay_us - share)]
    return plans, sum(delay_us + max(shares.values()) + tail_us for shares in shares_us)


def test_straggler():
    """Spinning off, two workers: in slow runs one worker's share of each of the 2 sections ends
    1.5 ms after the other's (the caller spins meanwhile, on CPU)."""
    builder = Builder(workers=[WORKER, WORKER2])
    for index in range(30):
        late = 1500 if index % 5 == 4 else 0
        workers, section_us = _sections_of([{WORKER: 1000, WORKER2: 1000 + late}] * 2)
        builder.run(RunPlan([on_cpu(section_us + 100)], workers))
    breakdown, _ = breakdown_of(builder)
    typical, slow = breakdown.typical, breakdown.slow
    assert typical.sections == slow.sections == "visible"
    assert typical.sections_per_run == 2.0 and typical.wakeup.per_run == 4.0
    assert typical.straggler_ms == 0.0
    assert slow.straggler_ms == 3.0              # 1.5 ms late in each of 2 sections
    assert breakdown.cause.id == "straggler" and breakdown.cause.explained_ms == 3.0
    assert breakdown.cause.excess_ms == 3.0


def test_a_caller_asleep_until_a_worker_wakes_it_waits_for_a_straggler():
    """A caller that blocks at the end of a section (not ORT's spin) and is woken by the worker."""
    builder = Builder(workers=[WORKER])
    for index in range(20):
        wait = 2000 if index % 4 == 3 else 100
        builder.run(RunPlan([on_cpu(1000), Seg(BLOCKED, wait), Seg(RUNNABLE, 10, woken_by=WORKER), on_cpu(500)],
                            {WORKER: [Seg(RUNNABLE, 10, woken_by=CALLER), on_cpu(990 + wait), Seg(BLOCKED, 10)]}))
    breakdown, _ = breakdown_of(builder)
    assert breakdown.slow.blocked_on_workers_ms == 2.0 and breakdown.slow.states_ms[BLOCKED] == 2.0
    assert breakdown.slow.straggler_ms == 2.0 and breakdown.typical.straggler_ms == 0.1
    assert breakdown.cause.id == "straggler" and breakdown.cause.explained_ms == 1.9


def test_wake_up_delay():
    """Spinning off, one worker woken for 4 sections a run: 20 us to get on a CPU normally, 1 ms in
    one run in five."""
    builder = Builder(workers=[WORKER])
    for index in range(30):
        delay = 1000 if index % 5 == 4 else 20
        sections = [seg for n in range(4) for seg in _section(delay, 500, WORKER, gap_us=300 if n else 0)]
        builder.run(RunPlan([on_cpu(4 * (delay + 510) + 3 * 300 + 50)], {WORKER: sections}))
    breakdown, _ = breakdown_of(builder)
    typical, slow = breakdown.typical, breakdown.slow
    assert typical.wakeup.per_run == 4.0 and typical.wakeup.mean_us == 20.0 and typical.wakeup.ms == 0.08
    assert slow.wakeup.mean_us == 1000.0 and slow.wakeup.max_us == 1000.0 and slow.wakeup.ms == 4.0
    # between two sections of a run the worker slept 300 us (+ the 10 us after each share): a spin that long
    # would have kept it awake
    assert typical.wakeup.gap_p90_us == 310.0
    assert breakdown.cause.id == "wake-up-delay" and breakdown.cause.explained_ms == pytest.approx(3.92)
    assert breakdown.slow_runs[0].wakeup_ms == 4.0


def test_no_cause_on_steady_runs():
    builder = Builder(workers=[WORKER])
    for index in range(40):
        builder.run(RunPlan([on_cpu(3000 + 10 * (index % 7))],
                            {WORKER: [Seg(RUNNABLE, 15, woken_by=CALLER), on_cpu(1200), Seg(BLOCKED, 10)]}))
    breakdown, _ = breakdown_of(builder)
    assert breakdown.cause.id == "none" and breakdown.step is None
    assert breakdown.slow.held_by == [] and breakdown.slow.states_ms[RUNNABLE] == 0.0


def test_slow_runs_that_computed_longer_are_not_blamed_on_the_scheduler():
    builder = Builder()
    one_thread_runs(builder, 40, 5, RunPlan([on_cpu(9000)]))
    breakdown, _ = breakdown_of(builder, workers=[])
    assert breakdown.cause.id == "on-cpu" and breakdown.cause.explained_ms == 6.0
    assert "not the scheduler" in breakdown.cause.detail


# -- what the scheduler cannot see ------------------------------------------------------------------

def test_spinning_workers_hide_their_sections():
    """Default options: the worker spins on CPU between sections and is never woken: sections,
    wake-up delay and stragglers are unknown, not zero."""
    builder = Builder(workers=[WORKER], idle_worker_state=ON_CPU)
    for _ in range(20):
        builder.run(RunPlan([on_cpu(3000)]))
    breakdown, _ = breakdown_of(builder, spinning=True)
    group = breakdown.typical
    assert group.sections == "spinning" and group.sections_per_run is None
    assert group.wakeup is None and group.straggler_ms is None


def test_workers_not_tied_to_the_session_are_unknown():
    builder = Builder()
    one_thread_runs(builder, 20, 5, RunPlan([on_cpu(3000)]))
    breakdown, _ = breakdown_of(builder, workers=None)
    breakdown_unknown = session_breakdown(builder.timeline(), builder.spans,
                                          SessionThreads(1, None, None))
    assert breakdown_unknown.typical.sections == "unknown" and breakdown_unknown.workers is None
    assert any("not known" in note for note in breakdown_unknown.notes)
    assert breakdown.workers == []


# -- a step, not scatter ----------------------------------------------------------------------------

def test_a_step_is_found_and_explained():
    """The first 25 runs wait 5 ms each for a CPU held by another process, the next 35 do not."""
    builder = Builder()
    for index in range(60):
        builder.run(RunPlan([on_cpu(1500), runnable(5000), on_cpu(1500)] if index < 25 else [on_cpu(3000)]))
    breakdown, _ = breakdown_of(builder, workers=[])
    step = breakdown.step
    assert step is not None
    assert step.before.runs == 25 and step.after.runs == 35
    assert step.before.run_ms == 8.0 and step.after.run_ms == 3.0
    assert step.at_s == pytest.approx(26 * 0.020 + 25 * 0.008, abs=1e-3)
    assert step.cause.id == "cpu-contention" and step.cause.explained_ms == 5.0
    assert step.cause.detail.startswith("runs before ")


def test_scatter_is_not_a_step():
    builder = Builder()
    for index in range(60):
        builder.run(RunPlan([on_cpu(8000 if index % 4 == 0 else 3000)]))
    breakdown, _ = breakdown_of(builder, workers=[])
    assert breakdown.step is None
    assert breakdown.cause.id == "on-cpu"        # the slow runs are slow, just not from one moment on


# -- when there is nothing to break down ----------------------------------------------------------------

def test_why_not():
    builder = Builder()
    one_thread_runs(builder, 4, 5, RunPlan([on_cpu(3000)]))
    timeline = builder.timeline()
    assert why_not(None, builder.spans) == "no scheduler events were recorded in this run"
    assert why_not(timeline, []) == "no run() was timed in the window"
    assert "at least 10" in why_not(timeline, builder.spans)
    elsewhere = [RunSpan(1, 777, span.start, span.seconds) for span in builder.spans]
    assert "777" in why_not(timeline, elsewhere)
    assert session_breakdown(timeline, builder.spans, SessionThreads(1, [], None)) is None


# -- the report's JSON and terminal text of a breakdown ---------------------------------------------

def test_breakdown_json_and_terminal_golden():
    """A one-thread session whose runs stepped (another process held its CPU for the first 25 runs),
    as `ortprof report --json` and the terminal print it; the JSON is checked against the schema."""
    import io
    import json

    from rich.console import Console

    from golden_files import check_golden
    from ortprof.model.report import OrtContext, Report
    from ortprof.render.terminal import _slow_runs
    from ortprof.signals.runs import SessionSummary

    builder = Builder()
    for index in range(40):
        builder.run(RunPlan([on_cpu(1500), runnable(5000), on_cpu(1500)] if index < 15 else [on_cpu(3000)]))
    breakdown, _ = breakdown_of(builder, workers=[], tid_session={CALLER: 1})
    session = SessionSummary(session=1, pid=PID, model="/srv/encoder.onnx", providers=None, ort_version="1.31.1",
                             options={"intra_op_num_threads": 1}, runs=40, rate_per_s=10.0, mean_ms=4.9, p50_ms=3.0,
                             p95_ms=8.0, p99_ms=8.0, max_ms=8.0, variance_p99_p50=2.67, caller_tids=[CALLER],
                             latency_breakdown=breakdown)
    report = Report(window_seconds=1.0, ort=OrtContext(ort_version="1.31.1", client="python"), sessions=[session])
    document = report.to_json()
    check_golden("sched-breakdown-step.json", json.dumps(document["sessions"][0]["latency_breakdown"], indent=1) + "\n")
    stream = io.StringIO()
    _slow_runs(report, Console(file=stream, width=140, force_terminal=False, highlight=False))
    check_golden("sched-breakdown-step.txt", stream.getvalue())


# -- the report hooks ----------------------------------------------------------------------------------

def _loaded(builder, timeline, pools=None, hook_sessions=(), missing=None):
    from types import SimpleNamespace

    from ortprof.model.profile import Profile
    profile = Profile()
    profile.runs = list(builder.spans)
    return SimpleNamespace(profile=profile, pools=pools, hook_sessions=list(hook_sessions), sched_timeline=timeline,
                           sched_missing=missing)


def _session_summary(session=1, options=None, caller=CALLER):
    from ortprof.signals.runs import SessionSummary
    return SessionSummary(session=session, pid=PID, model=None, providers=None, ort_version="1.31.1",
                          options=options or {}, runs=20, rate_per_s=10.0, mean_ms=3.0, p50_ms=3.0, p95_ms=3.0,
                          p99_ms=3.0, max_ms=3.0, variance_p99_p50=1.0, caller_tids=[caller])


def test_fill_ties_workers_to_sessions_and_says_why_when_it_cannot():
    from ortprof.analysis.roles import PoolThread
    from ortprof.model.report import Report
    from ortprof.signals.sched.report import fill, missing_reason

    builder = Builder(workers=[WORKER])
    for _ in range(20):
        builder.run(RunPlan([on_cpu(3000)], {WORKER: [Seg(RUNNABLE, 20, woken_by=CALLER), on_cpu(1000), Seg(BLOCKED, 10)]}))
    timeline = builder.timeline()
    pools = {WORKER: PoolThread(WORKER, 1, "intra-op", "session-creation"),
             OTHER_WORKER: PoolThread(OTHER_WORKER, 2, "intra-op", "session-creation")}
    report = Report(window_seconds=1.0, sessions=[_session_summary(options={"config": {
        "session.intra_op.allow_spinning": "0"}}), _session_summary(session=2, caller=OTHER_CALLER)])
    fill(_loaded(builder, timeline, pools), report, 8)
    breakdown = report.sessions[0].latency_breakdown
    assert breakdown.workers == [WORKER] and breakdown.typical.sections == "visible"
    assert breakdown.typical.wakeup.per_run == 1.0
    assert report.sessions[1].latency_breakdown is None          # session 2 ran nothing in the window
    assert missing_reason(_loaded(builder, timeline, pools), report) is None
    # a session the hook saw start no thread has no pool; an unknown one with several sessions stays unknown
    one = Report(window_seconds=1.0, sessions=[_session_summary(), _session_summary(session=2, caller=OTHER_CALLER)])
    fill(_loaded(builder, timeline, None, [{"session": 1, "pid": PID, "new_threads": []}]), one, 8)
    assert one.sessions[0].latency_breakdown.workers == []
    unknown = Report(window_seconds=1.0, sessions=[_session_summary(), _session_summary(session=2, caller=OTHER_CALLER)])
    fill(_loaded(builder, timeline, None), unknown, 8)
    assert unknown.sessions[0].latency_breakdown.workers is None
    # nothing to break down: the capture's reason, else the join's
    empty = Report(window_seconds=1.0, sessions=[_session_summary()])
    assert missing_reason(_loaded(builder, None, missing="bpftrace is not installed"), empty) == "bpftrace is not installed"
    assert missing_reason(_loaded(builder, None), empty) == "no scheduler events were recorded in this run"
    few = Builder()
    for _ in range(3):
        few.run(RunPlan([on_cpu(3000)]))
    fill(_loaded(few, few.timeline()), empty, 8)
    assert "3 run(s) in the window" in missing_reason(_loaded(few, few.timeline()), empty)


def test_threads_of_one_name_are_one_holder_and_profilers_are_named_as_such():
    """Three hogs hold 2 ms each, the recording's bpftrace 5 ms: the cause names the hogs (6 ms); a
    profiler is named only when nothing else held the CPU, and a note says what it cost."""
    hogs = [(9201 + n, 9201 + n, "hog") for n in range(3)]
    builder = Builder()
    for index in range(40):
        if index % 5 == 4:
            waits = [runnable(2000, held_by=hog) for hog in hogs] + [runnable(5000, held_by=(9300, 9300, "bpftrace"))]
            builder.run(RunPlan([on_cpu(1500), *waits, on_cpu(1500)]))
        else:
            builder.run(RunPlan([on_cpu(3000)]))
    breakdown, _ = breakdown_of(builder, workers=[])
    holder = breakdown.cause.holder
    assert (holder.comm, holder.ms, holder.threads, holder.whose) == ("hog", 6.0, 3, OTHER_PROCESS)
    assert "hog (3 threads" in breakdown.cause.detail
    assert [h.whose for h in breakdown.slow.held_by][0] == "profiler"     # the biggest single thread, listed
    assert any("profilers (bpftrace" in note and "5.00 ms of the 11.00 ms" in note for note in breakdown.notes)
    alone = Builder()
    for index in range(20):
        alone.run(RunPlan([on_cpu(1500), runnable(4000, held_by=(9300, 9300, "bpftrace")), on_cpu(1500)]
                          if index % 5 == 4 else [on_cpu(3000)]))
    breakdown, _ = breakdown_of(alone, workers=[])
    assert breakdown.cause.holder.comm == "bpftrace" and "a profiler" in breakdown.cause.detail


def test_the_process_own_threads_on_the_cpu_are_holders_from_the_timeline():
    """The capture names other processes' threads as holders; a thread of the process that had the CPU
    is found in the timeline itself: session 2's worker spinning on CPU 1 the whole window holds the
    CPU session 1's worker waits for."""
    builder = Builder(workers=[WORKER])
    for index in range(30):
        wait = 4000 if index % 5 == 4 else 20
        builder.run(RunPlan([on_cpu(wait + 3000)],
                            {WORKER: [Seg(RUNNABLE, wait, woken_by=CALLER), on_cpu(2500), Seg(BLOCKED, 100)]}))
    spinning = [StateInterval(OTHER_WORKER, ON_CPU, WINDOW_OPEN_NS, builder.now + builder.gap_us * US, cpu=1)]
    breakdown, _ = breakdown_of(builder, tid_session={CALLER: 1, WORKER: 1, OTHER_WORKER: 2},
                                extra_threads={OTHER_WORKER: spinning})
    holder = breakdown.slow.top_holder
    assert (holder.pid, holder.tid, holder.whose, holder.session, holder.ms) == (PID, OTHER_WORKER, OTHER_SESSION, 2, 4.0)
    assert breakdown.typical.top_holder.ms == 0.02
    assert breakdown.slow.workers_ms[RUNNABLE] == 4.0 and breakdown.slow.wakeup.contended_ms == 4.0
    assert breakdown.cause.id == "cpu-contention" and breakdown.cause.explained_ms == pytest.approx(3.98)


def test_a_profiler_is_named_when_others_held_the_cpu_for_a_trifle():
    builder = Builder()
    for index in range(20):
        builder.run(RunPlan([on_cpu(1500), runnable(4000, held_by=(9300, 9300, "bpftrace")),
                             runnable(100, held_by=(107, 107, "kdamond.0")), on_cpu(1500)]
                            if index % 5 == 4 else [on_cpu(3000)]))
    breakdown, _ = breakdown_of(builder, workers=[])
    assert breakdown.cause.holder.comm == "bpftrace" and breakdown.cause.holder.whose == "profiler"
