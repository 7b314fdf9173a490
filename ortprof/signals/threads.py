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


SIGNAL = Signal(name="threads", description="per-thread CPU time from /proc (psutil), sampled during the run",
                sections={"threads": ThreadsSummary}, files=(THREADS_CSV,))
