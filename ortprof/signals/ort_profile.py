"""ORT's own per-node profile (`record --ort-profile`): operators, nodes and parallel sections."""
from dataclasses import dataclass, field
from typing import List, Optional

from .base import Capture, Signal


@dataclass
class OperatorRow:
    """One op type (or one node) of a session, from ORT's own profile joined with the samples."""
    session: int
    op: str
    node: Optional[str]                      # None in the per-op-type table
    provider: str
    calls: int
    total_ms: float
    ms_per_inference: Optional[float]
    run_share_pct: Optional[float]           # % of the session's run() time (the hook's timing)
    mean_us: float
    parallel_calls_pct: Optional[float]      # % of calls where pool workers took part; None: no scheduling stats
    workers_mean: Optional[float]            # pool workers that took part, mean over those calls
    cpu_pct: Optional[float]                 # sampled CPU while it ran, any thread, % of one core
    spin_sync_pct: Optional[float]           # spin-wait + sync CPU during it or right after it


@dataclass
class FrameOps:
    """A stripped function named by the op types it ran under."""
    function: str                            # the frame's name (ort!fn_...)
    ops: str                                 # "MatMul 81%, Gemm 17%"
    cpu_pct: float                           # sampled CPU inside a node, % of one core


@dataclass
class ParallelSections:
    """Node runs that opened parallel sections on the intra-op pool (ORT's thread_scheduling_stats)."""
    node_runs: int
    per_inference: Optional[float]
    threshold_us: float                      # sections shorter than this cost more to share than they save
    short: int                               # node runs whose sections are shorter on average
    short_share_pct: Optional[float]
    short_spin_sync_pct: Optional[float]     # spin + sync CPU during or after the short ones, % of one core
    workers_mean: Optional[float]            # pool workers that took part, mean
    no_worker_pct: Optional[float]           # % of them in which no worker ran a task (the caller did it all)
    sessions: List[int] = field(default_factory=list)   # sessions with short sections, most first


@dataclass
class ClockAlignment:
    """ORT's model_run events against the hook's run() spans, once on perf's clock."""
    runs_matched: int
    start_lead_us_p50: Optional[float]       # ORT's model_run starts this long after the hook's run() start
    end_lag_us_p50: Optional[float]          # and ends this long before its end
    error_bound_us: Optional[float]          # |clock offset error| <= this (model_run always inside run())


@dataclass
class OperatorsSection:
    source: str                              # "ort-profile"
    files: List[str] = field(default_factory=list)
    node_runs: int = 0
    inferences: int = 0                      # ORT's model_run events in the window
    run_ms: Optional[float] = None           # the hook's run() time of the profiled sessions in the window
    node_ms: float = 0.0
    node_share_pct: Optional[float] = None   # node time / run() time
    samples_in_nodes_pct: Optional[float] = None   # of the profiled sessions' samples, share inside a node
    between_runs_spin_sync_pct: Optional[float] = None   # spin + sync while no run() is in flight, % of one core
    ops: List[OperatorRow] = field(default_factory=list)
    nodes: List[OperatorRow] = field(default_factory=list)   # top nodes by time
    frames: List[FrameOps] = field(default_factory=list)
    parallel: Optional[ParallelSections] = None
    alignment: Optional[ClockAlignment] = None
    notes: List[str] = field(default_factory=list)


class OrtProfileCapture(Capture):
    """ORT's profiler, turned on in every session by the hook (record --ort-profile); its files
    end with the window: the hook writes them while the workload still runs."""

    def __init__(self, recorder):
        super().__init__(recorder)
        self.window_closed = False

    def window_closing(self):
        self.window_closed = True

    def stop(self):
        from ..hook import end_ort_profiles
        from .runs import HOOK_DIR
        if not self.window_closed or self.recorder.workload is None:
            return
        still_open = end_ort_profiles(self.recorder.run.file(HOOK_DIR))
        if still_open:
            self.recorder.note(f"ORT's profile of {len(still_open)} session(s) was not finished when the window "
                               "closed (no run() since, or a long write); the hook ends it when the workload exits")


def capture(recorder):
    return OrtProfileCapture(recorder) if recorder.options.ort_profile else None


def load(run, loaded):
    """ORT's profile files the hook names, limited to the window (after the runs signal: its records)."""
    from ..analysis.ort_profile import load_ort_profiles
    from .runs import HOOK_DIR
    loaded.ort_profiles = load_ort_profiles(loaded.hook_records, run.file(HOOK_DIR), loaded.manifest.window_span)


def report(loaded, report, top):
    """Before the samples' hot paths: it labels the stripped frames they show with their op types."""
    from ..analysis.operators import operators_section
    if loaded.ort_profiles is not None:
        report.operators = operators_section(loaded.profile, loaded.ort_profiles, loaded.pools,
                                             loaded.window_seconds, top)


SIGNAL = Signal(name="ort_profile", description="ORT's own per-node profile: operators, nodes, parallel sections",
                load=load, report=report, capture=capture)
