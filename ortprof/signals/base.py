"""What a signal is: one source of evidence, from the machine check to the report section.

A signal module defines `SIGNAL`, a `Signal` naming what it owns: the checks
`doctor` and `record` ask of the machine, what it records (a `Capture` that
`record` drives through the phases of a recording), its files in the run
directory, its sections of run.json (dataclasses), how it loads into a
LoadedRun (the Profile, the per-thread timeline, the run() spans), how it fills
its report section, and why that section is empty when the run lacks it. Its report section's type is
defined in the signal's module; ortprof.model.report.Report composes them.

Signal modules import ortprof.analysis lazily (inside functions): the model
imports the signals' section types, and the analysis imports the model.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple


@dataclass
class Usability:
    """Whether a way of recording could be used; if not, why and the fix (e.g. run.json "futex_probe")."""
    usable: Optional[bool] = None
    reason: Optional[str] = None
    fix: Optional[str] = None


class Capture:
    """A signal's part of one `ortprof record`, driven by the recorder in this order:
    before_workload -> workload_environment / workload_preexec (launched workloads) ->
    follow(pid) (again when ORT turns out to run in a child) -> start(pid) -> [the
    window opens] -> window_opened -> ... -> window_closing -> stop -> finish, each
    phase over every capture in SIGNALS order.
    stop and finish run whatever happened before (Ctrl+C, a failure), and only once.
    `recorder` is what drives the capture: `record`'s Recorder, or one process's window
    of the agent (agent/window.py, which drives its own captures, agent/captures.py, and
    this module's shared ones, e.g. the cgroup's); both give `run`, `manifest` and `note`."""

    def __init__(self, recorder):
        self.recorder = recorder

    def before_workload(self) -> None:
        """Attach what must run before the workload starts."""

    def workload_environment(self, env: dict) -> dict:
        return env

    def workload_preexec(self) -> Optional[Callable[[], None]]:
        """A function the launched workload runs before exec (e.g. joining a cgroup)."""
        return None

    def follow(self, pid: int) -> None:
        """Record process `pid` from now on."""

    def warm_runs(self) -> Optional[int]:
        """run() calls this capture has seen so far, while the recorder waits for warm-up (None:
        it cannot tell); the hook's own `warm` record ends the wait as well."""
        return None

    def perf_options(self) -> dict:
        """Keyword arguments this signal adds to recording.profilers.perf_command: events it
        records through the samples signal's perf (the futex tracepoints)."""
        return {}

    def start(self, pid: int) -> None:
        """Start recording `pid`; return once recording really runs (the window opens then)."""

    def window_opened(self) -> None:
        """The window's start time is set."""

    def tick(self) -> None:
        """About once a second while the window is open (the agent's /proc snapshots)."""

    def window_closing(self) -> None:
        """The window's end time is set; profilers still run."""

    def processes(self) -> dict:
        """name -> ProfilerProcess this capture runs (run.json "profilers", early-exit checks)."""
        return {}

    def stop(self) -> None:
        for process in self.processes().values():
            process.stop()

    def finish(self) -> None:
        """Write this signal's run.json sections (the recorder saves the manifest after)."""


@dataclass(frozen=True)
class Signal:
    name: str                                   # "samples", "futex", "runs", ...
    description: str                            # one line, for docs and run.schema.json
    sections: Dict[str, type] = field(default_factory=dict)    # run.json key -> dataclass
    files: Tuple[str, ...] = ()                 # run-directory files it writes
    checks: Tuple[str, ...] = ()                # doctor check ids it needs when recording
    load: Optional[Callable[[Any, Any], None]] = None         # (RunDirectory, LoadedRun) -> None
    report: Optional[Callable[[Any, Any, int], None]] = None  # (LoadedRun, Report, top) -> None
    report_sections: Tuple[str, ...] = ()       # report keys it fills (empty_sections names)
    missing: Optional[Callable[[Any, Any], Optional[str]]] = None   # (LoadedRun, Report) -> why they are empty
    capture: Optional[Callable[[Any], Optional[Capture]]] = None    # (Recorder) -> its Capture, None: not recorded
