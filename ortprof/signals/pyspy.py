"""py-spy's Python stacks of every thread: time inside and outside ORT's run()."""
from dataclasses import dataclass, field
from typing import List, Optional

from .base import Capture, Signal

PYSPY_OUT = "py-spy.txt"
PYSPY_LOG = "py-spy.log"


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


def pyspy_rate_hz(manifest) -> Optional[float]:
    """py-spy's sampling rate, from the command line the recorder ran."""
    pyspy = manifest.profilers.get("py-spy")
    argv = pyspy.command if pyspy is not None else []
    for flag, value in zip(argv, argv[1:]):
        if flag == "--rate":
            return float(value)
    return None


class PySpyCapture(Capture):
    """`py-spy record` of the profiled process's Python stacks, from the window's start."""

    def __init__(self, recorder, pyspy_path):
        super().__init__(recorder)
        self.pyspy_path = pyspy_path
        self.process = None
        self.pid = None

    def start(self, pid):
        self.pid = pid

    def window_opened(self):
        from ..recording import profilers
        run = self.recorder.run
        argv = profilers.pyspy_command(self.pyspy_path, self.pid, str(run.file(PYSPY_OUT)),
                                       self.recorder.options.pyspy_rate)
        self.process = profilers.ProfilerProcess("py-spy", argv, str(run.file(PYSPY_LOG)),
                                                 str(run.file(PYSPY_OUT))).start()
        self.recorder.check_started(self.process)

    def processes(self):
        return {"py-spy": self.process} if self.process is not None else {}


def capture(recorder):
    pyspy = recorder.chosen.get("py-spy")
    return PySpyCapture(recorder, pyspy) if pyspy else None


def load(run, loaded):
    from ..analysis.pyspy import read_pyspy
    from ..errors import InputError
    path = run.file(PYSPY_OUT)
    if not path.exists():
        return
    try:
        loaded.pyspy = read_pyspy(path, pyspy_rate_hz(loaded.manifest))
    except InputError as error:
        loaded.notes.append(f"py-spy output unreadable: {error}")


def python_section(pyspy, seconds, top=5) -> PythonSection:
    """The py-spy view: each thread's Python time inside and outside ORT's run()."""
    if pyspy is None:
        return PythonSection()
    rate = pyspy.rate_hz or 100.0
    scale = 100.0 / (rate * seconds)
    threads = [PythonThread(
        tid=thread.tid, name=thread.name, samples=thread.samples, cpu_pct=round(thread.samples * scale, 2),
        in_run_pct=round(thread.in_run_samples * scale, 2),
        outside_run_pct=round(thread.python_busy_samples * scale, 2),
        waiting_pct=round(thread.waiting_samples * scale, 2),
        top_stacks=[PythonStack(";".join(map(str, stack.frames)), stack.kind, round(stack.samples * scale, 2))
                    for stack in thread.top_stacks[:top]])
        for thread in sorted(pyspy.threads, key=lambda t: -t.samples)]
    return PythonSection(source="py-spy", rate_hz=rate, threads=threads)


def report(loaded, report, top):
    report.python = python_section(loaded.pyspy, loaded.window_seconds)


SIGNAL = Signal(name="pyspy", description="Python stacks of every thread (py-spy): time inside and outside run()",
                files=(PYSPY_OUT, PYSPY_LOG), checks=("py-spy",), load=load, report=report, capture=capture)
