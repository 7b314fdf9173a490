"""Scheduler timelines constructed around a real run's run() spans, for the HTML report's state
lanes and run breakdowns (the sched capture's own tests use recorded events)."""
from ortprof.analysis.loading import load_run
from ortprof.recording.rundir import RunDirectory
from ortprof.signals.sched.timeline import (BLOCKED, ON_CPU, OTHER, RUNNABLE, Holder, SchedTimeline,
                                            StateInterval)

from conftest import FIXTURES

NOSPIN_RUN = FIXTURES / "run-nospin"     # the demo model, spinning off: caller 9591, pool worker 9597
CALLER, WORKER = 9591, 9597
HOG = Holder(pid=4242, tid=4242, comm="hog", ns=0)


def loaded_nospin():
    """The LoadedRun of fixtures/run-nospin without its perf samples (no subprocess): its runs and threads."""
    return load_run(RunDirectory(NOSPIN_RUN), samples=[])


def _ns(seconds):
    return int(round(seconds * 1e9))


class Builder:
    """Appends each thread's intervals in time order, without gaps."""

    def __init__(self, start_ns):
        self.intervals = {CALLER: [], WORKER: []}
        self.at = {CALLER: start_ns, WORKER: start_ns}

    def add(self, tid, state, until, **extra):
        if until > self.at[tid]:
            self.intervals[tid].append(StateInterval(tid, state, self.at[tid], until, **extra))
            self.at[tid] = until


def nospin_timeline(loaded, hog_fraction=0.4, sections=40, slice_us=None):
    """A timeline of run-nospin's caller and worker: between runs the caller sleeps (other) and the
    worker is parked (blocked); each run is `sections` parallel sections in which the caller computes
    60% and waits 40% (blocked), and the worker is woken (runnable, 5%), computes (50%) and parks. In
    the slowest run a CPU hog holds the caller's core for its first `hog_fraction`. `slice_us` cuts
    the time between runs into alternating on-CPU / idle slices that short (a busy thread: thousands
    of intervals a second). Returns (timeline, slowest run)."""
    window = tuple(_ns(t) for t in loaded.profile.span())
    runs = sorted(loaded.profile.runs, key=lambda r: r.start)
    slowest = max(runs, key=lambda r: r.seconds)
    build = Builder(window[0])
    for run in runs:
        start, end = _ns(run.start), _ns(run.start + run.seconds)
        for tid, idle in ((CALLER, OTHER), (WORKER, BLOCKED)):
            if slice_us:
                step, on = _ns(slice_us / 1e6), True
                while build.at[tid] + step < start:
                    build.add(tid, ON_CPU if on else idle, build.at[tid] + step)
                    on = not on
            build.add(tid, idle, start)
        if run is slowest:
            build.add(CALLER, RUNNABLE, start + int((end - start) * hog_fraction), cpu=0,
                      holders=[Holder(HOG.pid, HOG.tid, HOG.comm, int((end - start) * hog_fraction))])
            build.add(WORKER, BLOCKED, build.at[CALLER])
        first = build.at[CALLER]
        length = (end - first) // sections
        for k in range(sections):
            begin = first + k * length
            stop = end if k == sections - 1 else begin + length
            build.add(CALLER, ON_CPU, begin + int(0.6 * (stop - begin)), cpu=0)
            build.add(CALLER, BLOCKED, stop)
            build.add(WORKER, RUNNABLE, begin + int(0.05 * (stop - begin)), cpu=1, woken_by=CALLER)
            build.add(WORKER, ON_CPU, begin + int(0.55 * (stop - begin)), cpu=1)
            build.add(WORKER, BLOCKED, stop)
    build.add(CALLER, OTHER, window[1])
    build.add(WORKER, BLOCKED, window[1])
    timeline = SchedTimeline("constructed", window, 9591, threads=build.intervals,
                             comms={CALLER: "python", WORKER: "python"}, throttling_known=True)
    return timeline, slowest
