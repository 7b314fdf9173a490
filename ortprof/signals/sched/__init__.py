"""Scheduler events of the process in the window, joined with its run() spans (why was this run slow).

capture.py records them (probes in bpf.py, shared with the futex counters' bpftrace
program) and reads them back as a SchedTimeline (timeline.py, events.py); the analysis
(breakdown.py) joins the timeline with the run() spans and report.py fills the report."""
from ..base import Signal
from .capture import SchedRecord, capture, read_timeline


def load(run, loaded):
    """loaded.sched_timeline: the SchedTimeline, or None with loaded.sched_missing saying why."""
    pid = loaded.manifest.profiled_pid or loaded.manifest.pid
    timeline, why = read_timeline(run, loaded.manifest, pid)
    loaded.sched_timeline = timeline
    loaded.sched_missing = why
    for note in (timeline.notes if timeline is not None else ()):
        loaded.notes.append(f"scheduler: {note}")


def _analysis():
    """The analysis' part of the signal (breakdown.py, report.py), written separately; None while absent."""
    import importlib
    try:
        return importlib.import_module(f"{__name__}.report")
    except ImportError:
        return None


def fill_report(loaded, report, top):
    analysis = _analysis()
    if analysis is not None:
        analysis.fill(loaded, report, top)


def missing_reason(loaded, report):
    analysis = _analysis()
    return analysis.missing_reason(loaded, report) if analysis is not None else None


SIGNAL = Signal(
    name="sched", description="scheduler states per thread (on CPU, runnable and who held the CPU, throttled, "
                              "blocked in futex, other) in BPF",
    sections={"sched": SchedRecord}, checks=("sched-bpf",), load=load, report=fill_report, missing=missing_reason,
    capture=capture)
