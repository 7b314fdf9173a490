"""RunManifest: run.json (schema ortprof.run/1), typed, read and written in one place.

run.json is written as the run progresses and may come from an interrupted run,
so every field but the schema is optional. Its core fields (what was run, when,
how it ended) are declared here; each signal keeps its own section (futex,
threads, hook, cgroup ...) as a dataclass of its own, reached through
`section(key, type)`, so that a new signal adds a section without touching this
module. Keys that neither declares (a newer ortprof's) are kept as read.

ortprof/schemas/run.schema.json is generated from these types and the signals'
sections (scripts/gen_report_schema.py).
"""
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

from .plain import from_plain, to_plain

SCHEMA = "ortprof.run/1"
SectionType = TypeVar("SectionType")


@dataclass
class Window:
    """The profiling window on CLOCK_MONOTONIC (perf records with -k mono)."""
    start_mono: Optional[float] = None
    end_mono: Optional[float] = None        # set when the window closed
    seconds: Optional[float] = None


@dataclass
class Warmup:
    """How the window's start was chosen: the hook's warm-up signal, --delay, a timeout or none (--pid)."""
    mode: Optional[str] = None
    runs: Optional[int] = None
    waited_seconds: Optional[float] = None


@dataclass
class ProfilerRun:
    """A profiler process of the run (perf, py-spy, bpftrace) and what it left."""
    command: List[str] = field(default_factory=list)
    output: Optional[str] = None            # its file in the run directory
    exit_code: Optional[int] = None
    bytes: int = 0
    notes: List[str] = field(default_factory=list)


@dataclass
class RunManifest:
    schema: str = SCHEMA
    ortprof_version: Optional[str] = None
    name: Optional[str] = None
    mode: Optional[str] = None              # launch | attach
    command: Optional[List[str]] = None     # None for --pid
    pid: Optional[int] = None               # launched or attached process
    profiled_pid: Optional[int] = None      # the one profiled (a child, when ORT runs there)
    started_unix: Optional[float] = None
    started_at: Optional[str] = None
    status: Optional[str] = None            # starting | warming-up | recording | completed | interrupted | failed | workload-failed
    options: Dict[str, Any] = field(default_factory=dict)   # record's options as given
    ort_build: Optional[Dict[str, Any]] = None             # the `ortprof build` manifest used (--ort-build)
    warmup: Optional[Warmup] = None
    window: Optional[Window] = None
    environment: Dict[str, Any] = field(default_factory=dict)   # machine and process fingerprint
    cgroup_created: Optional[Dict[str, Any]] = None        # the CPU-limited group of --cpus
    profilers: Dict[str, ProfilerRun] = field(default_factory=dict)
    exit_code: Optional[int] = None
    stopped_by_ortprof: Optional[bool] = None
    files: Dict[str, int] = field(default_factory=dict)     # run directory file -> bytes
    notes: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    # signal sections (key -> dataclass, or the JSON read until a signal asks for its type)
    sections: Dict[str, Any] = field(default_factory=dict)
    # keys this version does not know, kept as read
    extra: Dict[str, Any] = field(default_factory=dict)

    # -- reading and writing ---------------------------------------------------
    @classmethod
    def from_json(cls, document: Optional[dict], section_types: Optional[Dict[str, type]] = None) -> "RunManifest":
        """The manifest of a run.json document. `section_types`: the sections signals own
        (ortprof.signals.manifest_section_types()), read as their dataclasses (a field an older
        ortprof did not write gets its default); other unknown keys land in `extra`."""
        document = dict(document or {})
        section_types = section_types or {}
        core = {item.name for item in fields(cls)} - {"sections", "extra"}
        manifest = from_plain(cls, {key: value for key, value in document.items() if key in core})
        for key, value in document.items():
            if key in core:
                continue
            if key in section_types and value is not None:
                manifest.sections[key] = from_plain(section_types[key], value)
            else:
                manifest.extra[key] = value
        return manifest

    def to_json(self) -> dict:
        data = {item.name: to_plain(getattr(self, item.name)) for item in fields(self)
                if item.name not in ("sections", "extra")}
        data["schema"] = SCHEMA
        data.update({key: to_plain(value) for key, value in self.sections.items()})
        data.update({key: value for key, value in self.extra.items() if key not in data})
        return data

    def section(self, key: str, section_type: Type[SectionType]) -> Optional[SectionType]:
        """A signal's section as its dataclass (None when the run has none)."""
        value = self.sections.get(key, self.extra.get(key))
        if value is None or isinstance(value, section_type):
            return value
        typed = from_plain(section_type, value)
        self.sections[key] = typed
        self.extra.pop(key, None)
        return typed

    def set_section(self, key: str, value: Any) -> None:
        self.sections[key] = value
        self.extra.pop(key, None)

    # -- derived facts the analysis reads --------------------------------------
    @property
    def window_span(self) -> Optional[Tuple[float, float]]:
        """(start, end) CLOCK_MONOTONIC seconds of the profiling window, when it closed."""
        window = self.window
        if window is not None and window.start_mono is not None and window.end_mono is not None:
            return (window.start_mono, window.end_mono)
        return None

    @property
    def window_seconds(self) -> Optional[float]:
        return self.window.seconds if self.window is not None else None

    @property
    def ort(self) -> dict:
        return self.environment.get("ort") or {}

    @property
    def ort_module(self) -> Optional[str]:
        return self.ort.get("native_module") or self.ort.get("path")

    @property
    def build_config(self) -> Optional[str]:
        return (self.ort_build or {}).get("config")

    @property
    def usable_cores(self) -> Optional[int]:
        environment = self.environment
        return len(environment.get("affinity") or []) or (environment.get("cpu") or {}).get("logical_cores")

    @property
    def hostname(self) -> Optional[str]:
        return self.environment.get("hostname") or self.extra.get("hostname")
