"""Report: the diagnosis of one run, typed. `Report.to_json()` is the one definition of
`ortprof.report/1`; ortprof/schemas/report.schema.json describes the same shape for
users' scripts and is checked against every report the tests make.

CPU figures are % of one core over the window; None where the run has no data
for them (no perf samples), never 0 standing in for "unknown".
"""
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from ..errors import InputError
from ..findings import Finding
from .plain import from_plain, to_plain
# Each signal's report section is defined with the signal; the Report composes them.
from ..signals.cgroup import CgroupSection
from ..signals.futex import FutexSection
from ..signals.ort_profile import OperatorsSection
from ..signals.pyspy import PythonSection
from ..signals.runs import SessionSummary

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
    client: Optional[str] = None             # python | native | csharp | java | node (what the process loaded); None: unknown


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
class PoolWorker:
    """An ORT pool thread tied to the session whose creation started it."""
    tid: int
    session: int
    pool: str                                # intra-op | inter-op
    evidence: str                            # session-creation | ort-profile | runs-together (inferred)
    role: str
    cpu_pct: Optional[float]
    spin_pct: Optional[float]


# Sections only present when the run has them (omitted from the JSON otherwise).
OPTIONAL_SECTIONS = ("gates", "operators", "pool_workers")
# Sections every report has (empty when the run lacks them): a document without one is not a report.
REQUIRED_SECTIONS = ("ort", "totals", "futex", "cgroup", "top_functions", "python")


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
        data: Dict[str, Any] = {"schema": SCHEMA}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "findings":
                data["findings"] = [finding.to_json() for finding in value]
            elif item.name in OPTIONAL_SECTIONS and value is None:
                continue
            else:
                data[item.name] = to_plain(value)
        return data

    @classmethod
    def from_json(cls, document):
        """The Report of a `to_json()` document (e.g. `ortprof report --json` output saved to a file).
        Another schema, or a document that is not a report, is one InputError."""
        schema = document.get("schema") if isinstance(document, dict) else None
        if schema != SCHEMA:
            raise InputError(f"not an {SCHEMA} document (schema {schema!r}): write it with a matching "
                             "`ortprof report --json`, or pass the run directory instead")
        missing = [name for name in REQUIRED_SECTIONS if document.get(name) is None]
        if missing:
            raise InputError(f"malformed {SCHEMA} document: no {', '.join(missing)}")
        try:
            return from_plain(cls, {key: value for key, value in document.items() if key != "schema"})
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"malformed {SCHEMA} document: {exc}")
