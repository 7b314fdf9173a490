"""Profile: what was sampled, with nothing decided about it yet but what the stack alone says.

Frames are interned once (DSO, address, build-id, name, source line where it
was looked up); stacks are tuples of frame ids, root first, each carrying the
raw CPU class the category rule gave it; threads keep weights per stack and
every sample's time, so a timeline, speedscope's sampled view or pprof need
no second decoding of perf.data. Roles are filled in by the analysis.

Memory: the frame and stack tables grow with distinct frames and stacks; the
per-sample arrays take 20 bytes a sample (176k samples: 3.5 MB).
"""
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..signals.futex.accumulator import FutexAccumulator
from ..signals.sched.timeline import SchedTimeline
from ..analysis.roles import UNKNOWN, StackEvidence, ThreadEvidence


@dataclass(frozen=True)
class Mapping:
    id: int
    path: str                   # as perf names it: a file path, [kernel.kallsyms], [vdso]
    kind: str                   # module kind: ort, kernel, python, syslib, blas, other
    build_id: Optional[str] = None


@dataclass
class FrameInfo:
    id: int
    name: str                   # display name (ORT's stripped functions: ort!fn_<start>)
    mapping: int                # Mapping.id
    address: int                # DSO-relative, as perf prints it
    symbolized: bool            # perf or ortprof's symbolizer named it (not a bare address)
    source: Optional[str] = None   # "file:line", looked up only for frames that matter
    ops: Optional[str] = None      # op types it ran under, from ORT's profile ("MatMul 81%, Gemm 17%")

    @property
    def display_name(self):
        """The name with its op-type label, for people; `name` stays the key."""
        return f"{self.name} [{self.ops}]" if self.ops else self.name

    def source_file_line(self):
        """(file, line) of `source`; line 0 when only a file is known; (None, 0) without a source."""
        if not self.source:
            return None, 0
        path, _, line = self.source.rpartition(":")
        return (path, int(line)) if path and line.isdigit() else (self.source, 0)


@dataclass(frozen=True)
class StackInfo:
    frames: Tuple[int, ...]     # frame ids, root first
    raw_class: str              # stacks.SPIN / SYNC / COMPUTE / KERNEL_CLASS / PYTHON_CLASS / OTHER_CLASS
    evidence: StackEvidence     # what the stack says about its thread's role


@dataclass
class ThreadSamples:
    tid: int
    comm: str = ""
    role: str = UNKNOWN
    ns_by_stack: Counter = field(default_factory=Counter)       # stack id -> sampled ns
    count_by_stack: Counter = field(default_factory=Counter)    # stack id -> samples
    times: array = field(default_factory=lambda: array("d"))    # CLOCK_MONOTONIC seconds, in order
    stack_ids: array = field(default_factory=lambda: array("l"))
    weights_ns: array = field(default_factory=lambda: array("q"))
    evidence: ThreadEvidence = field(default_factory=ThreadEvidence)

    @property
    def samples(self):
        return len(self.times)

    @property
    def ns(self):
        return sum(self.ns_by_stack.values())


@dataclass(frozen=True)
class RunSpan:
    """One `run()` the startup hook timed."""
    session: int
    tid: int
    start: float                # CLOCK_MONOTONIC seconds
    seconds: float


@dataclass
class Profile:
    mappings: List[Mapping] = field(default_factory=list)
    frames: List[FrameInfo] = field(default_factory=list)
    stacks: List[StackInfo] = field(default_factory=list)
    threads: Dict[int, ThreadSamples] = field(default_factory=dict)
    futex: FutexAccumulator = field(default_factory=FutexAccumulator)
    events: Counter = field(default_factory=Counter)           # event name -> count in the window
    first_time: Optional[float] = None
    last_time: Optional[float] = None
    window: Optional[Tuple[float, float]] = None               # (start, end) monotonic, when known
    runs: List[RunSpan] = field(default_factory=list)          # from the hook
    thread_cpu: Dict[int, List[Tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    # ^ tid -> [(monotonic s, cumulative CPU s)] from /proc (threads.csv)
    unix_minus_mono: Optional[float] = None   # wall clock - CLOCK_MONOTONIC, from the hook's hello record
    sched: Optional[SchedTimeline] = None     # the sched signal's thread states, for the exporters (HTML lanes)

    @property
    def cpu_samples(self):
        return sum(thread.samples for thread in self.threads.values())

    @property
    def has_samples(self):
        return any(thread.samples for thread in self.threads.values())

    def span(self):
        """(start, end) of the profile: the recording window, else first to last event."""
        if self.window:
            return self.window
        return (self.first_time or 0.0, self.last_time or 0.0)

    def start_unix(self):
        """Wall-clock seconds at the start of span(), when the run can say (None otherwise)."""
        return None if self.unix_minus_mono is None else self.span()[0] + self.unix_minus_mono

    def names(self, stack_id):
        """Frame names of a stack, root first (the keys: no op-type labels)."""
        frames = self.frames
        return [frames[i].name for i in self.stacks[stack_id].frames]

    def display_names(self, stack_id):
        """Frame names as shown to people (stripped functions with their op-type labels), root first."""
        frames = self.frames
        return [frames[i].display_name for i in self.stacks[stack_id].frames]

    def folded(self, stack_id):
        return ";".join(self.names(stack_id)) or "[no stack]"

    def display_folded(self, stack_id):
        return ";".join(self.display_names(stack_id)) or "[no stack]"

    def mapping_of(self, frame_id):
        return self.mappings[self.frames[frame_id].mapping]
