"""Per-thread CPU time from /proc, sampled at a fixed rate during the run (threads.csv)."""
from dataclasses import dataclass, field
from typing import Dict, Optional

from .base import Signal

THREADS_CSV = "threads.csv"


@dataclass
class ThreadsSummary:
    """run.json "threads": the sampler's rate and each thread's CPU over the window."""
    sample_hz: Optional[float] = None
    csv: Optional[str] = None
    window_cpu_pct: Dict[str, float] = field(default_factory=dict)   # tid -> % of one core
    process_cpu_pct: Optional[float] = None
    names: Dict[str, str] = field(default_factory=dict)              # tid -> thread name


def load(run, loaded):
    """Each thread's cumulative CPU series (the profile's timeline) and its CPU seconds in the window."""
    from ..recording.threadstats import read_thread_cpu_series
    span = loaded.manifest.window_span
    series = read_thread_cpu_series(run.file(THREADS_CSV), *(span or (None, None)))
    loaded.profile.thread_cpu.update(series)
    loaded.proc_cpu_seconds = {tid: max(0.0, points[-1][1] - points[0][1]) for tid, points in series.items()
                               if span is None or points[-1][0] >= span[0]}


SIGNAL = Signal(name="threads", description="per-thread CPU time from /proc (psutil), sampled during the run",
                sections={"threads": ThreadsSummary}, files=(THREADS_CSV,), load=load)
