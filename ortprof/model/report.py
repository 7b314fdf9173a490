"""Report: the diagnosis of one run, typed. `Report.to_json()` is the one definition of
`ortprof.report/1`; ortprof/schemas/report.schema.json describes the same shape for
users' scripts and is checked against every report the tests make.

CPU figures are % of one core over the window; None where the run has no data
for them (no perf samples), never 0 standing in for "unknown".
"""
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Dict, List, Optional

from ..errors import InputError
from ..findings import Finding

SCHEMA = "ortprof.report/1"

# Report categories (JSON names in totals are <category>_pct).
CATEGORIES = ("compute", "spin", "caller_spin", "sync", "kernel", "python", "other")


@dataclass
class OrtContext:
    """The ORT that was profiled."""
    ort_version: Optional[str] = None
    ort_module: Optional[str] = None
    build_id: Optional[str] = None
    symbol_status: Optional[str] = None      # stripped | symtab | dwarf ...
    build_config: Optional[str] = None       # from `ortprof build` / --ort-build
    usable_cores: Optional[int] = None
    binary_missing: bool = False             # gone or changed since the recording
    optimized: Optional[bool] = None         # from the module's DWARF producer; None: unknown
    producer: Optional[str] = None


@dataclass
class ThreadRow:
    tid: int
    role: str
    cpu_pct: Optional[float]                 # from perf samples
    proc_cpu_pct: Optional[float]            # from /proc
    samples: int = 0
    categories: Dict[str, float] = field(default_factory=dict)


@dataclass
class Totals:
    cpu_pct: Optional[float] = None
    proc_cpu_pct: Optional[float] = None
    compute_pct: Optional[float] = None
    spin_pct: Optional[float] = None
    caller_spin_pct: Optional[float] = None
    sync_pct: Optional[float] = None
    kernel_pct: Optional[float] = None
    python_pct: Optional[float] = None
    other_pct: Optional[float] = None
    mismatch_pct: Optional[float] = None
    mismatch: bool = False


@dataclass
class FutexThreadRow:
    tid: int
    role: str
    calls: int
    waits: int
    wakes: int
    calls_per_s: float
    time_ms_per_s: float
    calls_per_inference: Optional[float]


@dataclass
class FutexStack:
    stack: str
    calls: int


@dataclass
class FutexSection:
    recorded: bool = False
    calls: Optional[int] = None
    calls_per_s: Optional[float] = None
    time_ms_per_s: Optional[float] = None
    calls_per_inference: Optional[float] = None
    threads: List[FutexThreadRow] = field(default_factory=list)
    top_stacks: List[FutexStack] = field(default_factory=list)
    missing_reason: Optional[str] = None     # why there are no futex figures, with the fix
    method: Optional[str] = None             # "bpftrace" (in-kernel counters) | "perf-tracepoints" (every call)
    wait_ms_per_s: Optional[float] = None    # time blocked: the share of time_ms_per_s spent in wait calls
    stacks_sampled: bool = False             # top_stacks from a sample of the calls (calls, counts, times: exact)
    stack_sample_period: Optional[int] = None   # one stack per this many calls (1: every call)
    stack_samples: Optional[int] = None      # calls whose stack was recorded; top_stacks[].calls = these x period


@dataclass
class SessionSummary:
    session: int
    pid: Optional[int]
    model: Optional[str]
    providers: Optional[list]
    ort_version: Optional[str]
    options: dict
    runs: int
    rate_per_s: Optional[float]
    mean_ms: Optional[float]
    p50_ms: Optional[float]
    p95_ms: Optional[float]
    p99_ms: Optional[float]
    max_ms: Optional[float]
    variance_p99_p50: Optional[float]
    caller_tids: List[int]


@dataclass
class HotPath:
    role: str
    category: str
    cpu_pct: float
    stack: str                               # root;...;leaf


@dataclass
class FunctionShare:
    function: str
    cpu_pct: float


@dataclass
class TopFunctions:
    self: List[FunctionShare] = field(default_factory=list)
    total: List[FunctionShare] = field(default_factory=list)


@dataclass
class HotSpot:
    function: str
    dso: str
    address: str
    cpu_pct: float
    source: Optional[str]


@dataclass
class CgroupSection:
    quota_cpus: Optional[float] = None
    throttled_periods: Optional[int] = None
    throttled_ms: Optional[float] = None
    periods: Optional[int] = None


@dataclass
class PythonStack:
    stack: str                               # root;...;leaf, Python frames as "function (file:line)"
    kind: str                                # in-run | waiting | python
    pct: float                               # % of one core


@dataclass
class PythonThread:
    tid: Optional[int]                       # None where py-spy gave only the pthread id
    name: Optional[str]
    samples: int
    cpu_pct: float                           # % of one core sampled active (py-spy's rate)
    in_run_pct: float                        # inside ORT's run()
    outside_run_pct: float                   # on the CPU outside run(): the workload's own code
    waiting_pct: float                       # off the CPU outside run(): sleep, locks, I/O, the GIL
    top_stacks: List[PythonStack] = field(default_factory=list)


@dataclass
class PythonSection:
    """Python-level view from py-spy (runs recorded with --profiler py-spy)."""
    source: Optional[str] = None             # "py-spy" or None
    rate_hz: Optional[float] = None
    threads: List[PythonThread] = field(default_factory=list)


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


@dataclass
class PoolWorker:
    """An ORT pool thread tied to the session whose creation started it."""
    tid: int
    session: int
    pool: str                                # intra-op | inter-op
    evidence: str                            # session-creation | ort-profile
    role: str
    cpu_pct: Optional[float]
    spin_pct: Optional[float]


# Sections only present when the run has them (omitted from the JSON otherwise).
OPTIONAL_SECTIONS = ("gates", "operators", "pool_workers")


@dataclass
class Report:
    window_seconds: float
    ort: OrtContext = field(default_factory=OrtContext)
    sessions: List[SessionSummary] = field(default_factory=list)
    threads: List[ThreadRow] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    futex: FutexSection = field(default_factory=FutexSection)
    hot_paths: List[HotPath] = field(default_factory=list)
    top_functions: TopFunctions = field(default_factory=TopFunctions)
    hot_spots: List[HotSpot] = field(default_factory=list)
    samples: int = 0
    cgroup: CgroupSection = field(default_factory=CgroupSection)
    pool_threads: Optional[int] = None
    python: PythonSection = field(default_factory=PythonSection)
    findings: List[Finding] = field(default_factory=list)
    empty_sections: Dict[str, str] = field(default_factory=dict)   # section -> why it is empty
    notes: List[str] = field(default_factory=list)
    run: Optional[str] = None
    command: Optional[list] = None
    status: Optional[str] = None
    perf_warnings: List[str] = field(default_factory=list)
    unreadable_perf_data: Optional[str] = None
    gates: Optional[dict] = None             # set by `report --fail-on`
    operators: Optional[OperatorsSection] = None     # runs recorded with --ort-profile
    pool_workers: Optional[List[PoolWorker]] = None  # when the hook saw sessions start their pools

    def to_json(self):
        data = {"schema": SCHEMA}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "findings":
                data["findings"] = [finding.to_json() for finding in value]
            elif item.name in OPTIONAL_SECTIONS and value is None:
                continue
            else:
                data[item.name] = asdict(value) if hasattr(value, "__dataclass_fields__") else _plain(value)
        return data

    @classmethod
    def from_json(cls, document):
        """The Report of a `to_json()` document (e.g. `ortprof report --json` output saved to a file).
        Another schema, or a document that is not a report, is one InputError."""
        schema = document.get("schema") if isinstance(document, dict) else None
        if schema != SCHEMA:
            raise InputError(f"not an {SCHEMA} document (schema {schema!r}): write it with a matching "
                             "`ortprof report --json`, or pass the run directory instead")
        try:
            return _from_plain(cls, {key: value for key, value in document.items() if key != "schema"})
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"malformed {SCHEMA} document: {exc}")


def _from_plain(tp, value):
    """`value` (JSON data) as type `tp`: dataclasses and lists of them rebuilt from their field types."""
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        inner = [arg for arg in args if arg is not type(None)]
        return _from_plain(inner[0], value) if len(inner) == 1 else value
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"{tp.__name__} must be an object, not {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        return tp(**{item.name: _from_plain(hints[item.name], value[item.name])
                     for item in fields(tp) if item.name in value})
    if origin in (list, typing.List) and args:
        return [_from_plain(args[0], item) for item in value]
    return value


def _plain(value):
    if isinstance(value, list):
        return [asdict(item) if hasattr(item, "__dataclass_fields__") else item for item in value]
    return value
