"""Per-thread CPU time from /proc, sampled at a fixed rate during the run (threads.csv)."""
from dataclasses import dataclass, field
from typing import Dict, Optional

from .base import Capture, Signal

THREADS_CSV = "threads.csv"


@dataclass
class ThreadsSummary:
    """run.json "threads": the sampler's rate and each thread's CPU over the window."""
    sample_hz: Optional[float] = None
    csv: Optional[str] = None
    window_cpu_pct: Dict[str, float] = field(default_factory=dict)   # tid -> % of one core
    process_cpu_pct: Optional[float] = None
    names: Dict[str, str] = field(default_factory=dict)              # tid -> thread name


class ThreadCpuCapture(Capture):
    """A background sampler of every thread's CPU time in /proc (threads.csv)."""

    def __init__(self, recorder):
        super().__init__(recorder)
        self.sampler = None

    def follow(self, pid):
        from ..recording.threadstats import ThreadCpuSampler
        if self.sampler is None:
            self.sampler = ThreadCpuSampler(pid, self.recorder.run.file(THREADS_CSV),
                                            self.recorder.options.thread_hz).start()
        else:
            self.sampler.retarget(pid)

    def stop(self):
        if self.sampler is not None:
            self.sampler.stop()
            if self.sampler.error:
                self.recorder.manifest.errors.append(self.sampler.error)

    def finish(self):
        if self.sampler is not None:
            self.recorder.manifest.set_section("threads", self.summary(self.sampler))

    def summary(self, sampler) -> ThreadsSummary:
        from ..model.manifest import Window
        from ..recording.threadstats import read_thread_cpu
        window = self.recorder.manifest.window or Window()
        used = read_thread_cpu(self.recorder.run.file(THREADS_CSV), window.start_mono, window.end_mono)
        seconds = window.seconds
        return ThreadsSummary(
            sample_hz=sampler.hz, csv=THREADS_CSV,
            window_cpu_pct={str(tid): round(100 * cpu / seconds, 2) for tid, cpu in sorted(used.items())}
            if seconds else {},
            process_cpu_pct=round(100 * sum(used.values()) / seconds, 2) if seconds else None,
            names={str(tid): name for tid, name in sampler.thread_names.items()})


def load(run, loaded):
    """Each thread's cumulative CPU series (the profile's timeline) and its CPU seconds in the window."""
    from ..recording.threadstats import read_thread_cpu_series
    span = loaded.manifest.window_span
    series = read_thread_cpu_series(run.file(THREADS_CSV), *(span or (None, None)))
    loaded.profile.thread_cpu.update(series)
    loaded.proc_cpu_seconds = {tid: max(0.0, points[-1][1] - points[0][1]) for tid, points in series.items()
                               if span is None or points[-1][0] >= span[0]}


SIGNAL = Signal(name="threads", description="per-thread CPU time from /proc (psutil), sampled during the run",
                sections={"threads": ThreadsSummary}, files=(THREADS_CSV,), load=load,
                capture=ThreadCpuCapture)
