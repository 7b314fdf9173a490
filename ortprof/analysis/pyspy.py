"""py-spy's raw output (`py-spy record --native --threads --format raw`) as typed data.

What py-spy measured: every 1/rate s it stopped the process and read each
Python thread's stack (Python frames interleaved with native ones, --native).
Each line of the file is one distinct stack, root first, and how many samples
had it:

    thread (6003): MainThread;<module> (app.py:5);Session.run (onnxruntime/...py:395);0x7fb7... (onnxruntime/capi/onnxruntime_pybind11_state...so) 17

Without --idle py-spy drops samples of threads the kernel reports as sleeping,
so the counts approximate each thread's active time; waits that race with that
check (a sleep just starting, a GIL hand-off) still show up and are counted as
waiting here. py-spy sees only threads that run Python: ORT's pool workers and
other native threads never appear (compare with the per-thread CPU of
threads.csv to find busy threads Python does not know).
"""
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import DefaultDict, Dict, List, Optional, Tuple

from ..errors import InputError
from .stacks import _SYNC_NAMES, ORT, PYTHON, SYSLIB, module_kind

# Stack kinds.
IN_RUN, WAITING, PYTHON_BUSY = "in-run", "waiting", "python"

TOP_STACKS = 10
UNNAMED = "[unnamed]"   # stands for consecutive raw addresses of one library in top stacks

_LINE = re.compile(r"^(?P<stack>.+) (?P<count>\d+)$")
_THREAD = re.compile(r"^thread \((?P<id>\d+|0x[0-9A-Fa-f]+)\)(?:: (?P<name>.*))?$")
_LOCATION = re.compile(r"^(?P<function>.*) \((?P<where>[^()]*)\)$")
_PY_LINE = re.compile(r"^(?P<file>.*):(?P<line>\d+)$")
# ORT's Python entry points into inference (onnxruntime_inference_collection.py).
_RUN_FILE = "onnxruntime_inference_collection.py"
_RUN_METHOD = re.compile(r"(^|\.)run(_with_\w+|_async)?$")
# Native leaves that mean the thread was not on the CPU: sleeping, polling, blocked on a lock
# or waiting for the GIL (3.11 waits for it in pthread_cond_timedwait).
_BLOCKING = re.compile(r"nanosleep|^select$|poll|epoll_wait|^accept|^recv|^read$|^__libc_read|"
                       r"^wait|^waitpid|sigtimedwait")


@dataclass(frozen=True)
class PyFrame:
    """One frame as py-spy printed it: a Python function with file:line, or a native
    symbol (or raw address) with the shared library it lives in."""
    function: str
    file: Optional[str] = None
    line: Optional[int] = None

    @property
    def native(self) -> bool:
        return self.line is None and self.file is not None and not self.file.endswith(".py")

    def __str__(self):
        if self.line is not None:
            return f"{self.function} ({self.file}:{self.line})"
        return f"{self.function} ({self.file})" if self.file else self.function


@dataclass(frozen=True)
class StackSamples:
    """A distinct stack (root -> leaf, thread frame excluded), its sample count and kind:
    in-run (inside ORT's run()), waiting (off-CPU outside run()), python (busy outside run())."""
    frames: tuple
    samples: int
    kind: str


@dataclass
class PythonThreadProfile:
    """What py-spy saw of one Python thread.

    tid: the OS thread id (None when py-spy could only give the pthread id, kept in
    thread_id); samples: all samples of the thread; in_run_samples: those inside an ORT
    run() call (busy or waiting in it); waiting_samples: off-CPU outside run() (sleep,
    locks, I/O, GIL); gil_wait_samples: waiting for the GIL, inside run() (taking it back
    to return the outputs) or outside.
    """
    tid: Optional[int]
    name: Optional[str]
    samples: int
    in_run_samples: int
    top_stacks: list
    waiting_samples: int = 0
    gil_wait_samples: int = 0
    thread_id: str = ""

    @property
    def outside_run_samples(self) -> int:
        return self.samples - self.in_run_samples

    @property
    def python_busy_samples(self) -> int:
        """On the CPU outside run(): the thread's own Python (and native non-ORT) work."""
        return self.samples - self.in_run_samples - self.waiting_samples

    @property
    def in_run_share(self) -> float:
        return self.in_run_samples / self.samples if self.samples else 0.0

    @property
    def outside_run_share(self) -> float:
        return 1.0 - self.in_run_share if self.samples else 0.0

    @property
    def python_busy_share(self) -> float:
        return self.python_busy_samples / self.samples if self.samples else 0.0


@dataclass
class PySpyProfile:
    """All threads of one py-spy recording; rate_hz: py-spy's sampling rate (samples / rate_hz
    approximates a thread's active seconds)."""
    rate_hz: float
    threads: list = field(default_factory=list)

    @property
    def samples(self) -> int:
        return sum(thread.samples for thread in self.threads)

    @property
    def in_run_samples(self) -> int:
        return sum(thread.in_run_samples for thread in self.threads)

    def thread(self, tid) -> Optional[PythonThreadProfile]:
        return next((thread for thread in self.threads if thread.tid == tid), None)

    def tids(self) -> set:
        """OS thread ids py-spy saw: a busy thread of the process not in this set runs no Python
        (an ORT pool worker, a BLAS thread)."""
        return {thread.tid for thread in self.threads if thread.tid is not None}


def parse_frame(text) -> PyFrame:
    match = _LOCATION.match(text)
    if not match:
        return PyFrame(text)
    where = match.group("where")
    py_line = _PY_LINE.match(where)
    if py_line:
        return PyFrame(match.group("function"), py_line.group("file"), int(py_line.group("line")))
    return PyFrame(match.group("function"), where)


def _is_run_entry(frame) -> bool:
    return (frame.line is not None and frame.file.endswith(_RUN_FILE)
            and bool(_RUN_METHOD.search(frame.function)))


def _is_ort_python(frame) -> bool:
    return frame.line is not None and frame.file.startswith("onnxruntime/")


def _is_ort_native(frame) -> bool:
    return frame.native and module_kind(frame.file) == ORT


def _named_leaf(frames):
    """(leaf frame, its caller) skipping the raw addresses inside libc that py-spy cannot name."""
    named = [f for f in frames if not (f.native and f.function.startswith("0x") and module_kind(f.file) == SYSLIB)]
    leaf = named[-1] if named else None
    caller = named[-2] if len(named) > 1 else None
    return leaf, caller


def waits_for_gil(frames) -> bool:
    """CPython waits for the GIL on a condition variable (take_gil is inlined, and py-spy
    names that libc code pthread_cond_wait or pthread_cond_timedwait) called straight from
    the interpreter; or timed, from ORT's module, where pybind11 takes the GIL back after
    run() (ORT's own waits are untimed, or nsync). A threading.Lock wait goes through
    PyThread_acquire_lock instead."""
    leaf, caller = _named_leaf(frames)
    if leaf is None or caller is None or not leaf.function.startswith("pthread_cond_"):
        return False
    if not caller.native or module_kind(caller.file) == PYTHON:
        return "acquire_lock" not in caller.function
    return module_kind(caller.file) == ORT and leaf.function.startswith("pthread_cond_timedwait")


def classify(frames) -> str:
    """IN_RUN, WAITING or PYTHON_BUSY for one stack (root -> leaf)."""
    if any(_is_run_entry(f) for f in frames):
        return IN_RUN
    # ORT native code with no ORT Python frame above it: py-spy lost the Python caller (it
    # does for a share of native stacks); once a session exists that code runs inside run().
    if any(_is_ort_native(f) for f in frames) and not any(_is_ort_python(f) for f in frames):
        return IN_RUN
    leaf, _ = _named_leaf(frames)
    if leaf is not None and leaf.native and (_SYNC_NAMES.search(leaf.function) or _BLOCKING.search(leaf.function)):
        return WAITING
    return PYTHON_BUSY


def _thread_key(root):
    match = _THREAD.match(root)
    if not match:
        return None
    raw = match.group("id")
    tid = int(raw) if raw.isdigit() else None
    return raw, tid, match.group("name")


def read_pyspy(path, rate_hz) -> PySpyProfile:
    """Parse py-spy's raw output at `path` (recorded at `rate_hz`).

    An empty file is a recording without a single active sample (an empty profile).
    Raises InputError for a file that is not py-spy raw output or was cut off.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            text = stream.read()
    except OSError as error:
        raise InputError(f"{path}: cannot read py-spy output: {error.strerror}")
    if text and not text.endswith("\n"):
        raise InputError(f"{path}: py-spy output ends mid-line (truncated): record again")
    per_thread: DefaultDict[str, Counter[Tuple[PyFrame, ...]]] = defaultdict(Counter)   # raw id -> stack -> samples
    names: Dict[str, Tuple[str, Optional[int], Optional[str]]] = {}   # raw thread id -> (raw, tid, name)
    for number, line in enumerate(text.splitlines(), 1):
        match = _LINE.match(line)
        if not match:
            raise InputError(f"{path}:{number}: not a py-spy raw line ('frame;frame;... count'): {line[:80]!r}")
        parts = match.group("stack").split(";")
        key = _thread_key(parts[0])
        if key is None:       # recorded without --threads: one anonymous thread
            key = ("", None, None)
        else:
            parts = parts[1:]
        names[key[0]] = key
        per_thread[key[0]][tuple(parse_frame(p) for p in parts)] += int(match.group("count"))
    threads = [_thread_profile(names[raw], stacks) for raw, stacks in per_thread.items()]
    threads.sort(key=lambda t: -t.samples)
    return PySpyProfile(rate_hz=rate_hz, threads=threads)


def fold_unnamed(frames) -> tuple:
    """Runs of raw-address frames of one library as a single frame: the stripped ORT wheel
    gives every sampled instruction its own stack otherwise."""
    folded: List[PyFrame] = []
    for frame in frames:
        if frame.native and frame.function.startswith("0x"):
            frame = PyFrame(UNNAMED, frame.file)
            if folded and folded[-1] == frame:
                continue
        folded.append(frame)
    return tuple(folded)


def _thread_profile(key, stacks) -> PythonThreadProfile:
    raw, tid, name = key
    kinds: Counter[str] = Counter()
    gil = 0
    folded: Counter[Tuple[tuple, str]] = Counter()   # (folded frames, kind) -> samples
    for frames, count in stacks.items():
        kind = classify(frames)
        kinds[kind] += count
        gil += count if waits_for_gil(frames) else 0
        folded[fold_unnamed(frames), kind] += count
    top = [StackSamples(frames, count, kind) for (frames, kind), count in folded.most_common(TOP_STACKS)]
    return PythonThreadProfile(tid=tid, name=name, samples=sum(stacks.values()),
                               in_run_samples=kinds[IN_RUN], top_stacks=top,
                               waiting_samples=kinds[WAITING], gil_wait_samples=gil, thread_id=raw)
