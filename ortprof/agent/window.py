"""One profiling window of several processes at once.

Each process gets a temporary run directory (run.json, perf.data, threads.csv and
the hook's records of the window), so the report is the one `ortprof report` gives
for a recording: `analysis.report.build_report` reads it. The directory, raw perf
data included, is deleted as soon as the profile and the pprof bytes are built.
perf itself is not started per window: each process has one `perf record` for as
long as the agent follows it (perfsession.PerfSession), enabled for the window and
cut at its end.
"""
import functools
import gzip
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import psutil

from .. import __version__
from ..environment import cpu_info, ort_module_info
from ..errors import OrtprofError
from ..model.manifest import RunManifest, Window
from ..recording import profilers, rundir
from ..signals.base import Usability
from ..signals.runs import HOOK_DIR
from .captures import window_captures
from .hooktail import HookTail
from .perfsession import PerfSession

# Low frequency for an always-on agent: ~10x fewer samples than `ortprof record`
# (199 Hz), still hundreds per busy thread in a 10 s window.
AGENT_FREQUENCY = 49
SNAPSHOT_SECONDS = 1.0      # per-thread CPU from /proc during the window


@dataclass
class WindowOptions:
    seconds: float = 10.0
    frequency: int = AGENT_FREQUENCY
    stack_size: int = profilers.DEFAULT_STACK_SIZE
    futex: bool = False
    futex_probe: Optional[Usability] = None   # when futex tracing was asked for


@dataclass
class WindowResult:
    target: object
    start_unix: float
    end_unix: float
    seconds: float
    profile: object = None
    report: object = None
    pprof: Optional[bytes] = None       # gzipped profile.proto; None without CPU samples
    exited: bool = False                # the process exited during the window
    error: Optional[str] = None
    runs: list = field(default_factory=list)         # (session, start, duration, tid, kind) the uprobes timed
    run_labels: dict = field(default_factory=dict)   # their session -> its sessions.SessionLabels


@functools.lru_cache(maxsize=1)
def _cpu_info():
    return cpu_info()


@functools.lru_cache(maxsize=32)
def _module_info(path, mtime):
    try:
        return ort_module_info(path)
    except (OrtprofError, OSError):
        return {"path": path}


def _module_facts(path):
    try:
        return dict(_module_info(path, os.stat(path).st_mtime))
    except OSError:
        return {"path": path}


class ProcessWindow:
    """One process's part of a window: a temporary run directory its captures (captures.py)
    fill, then analysed like a recording."""

    def __init__(self, target, options, session: PerfSession, work_dir, tail: Optional[HookTail], uprobes=None,
                 perf=None):
        self.target, self.options, self.session = target, options, session
        self.run = rundir.RunDirectory(tempfile.mkdtemp(prefix=f"window-{target.pid}-", dir=work_dir))
        (self.run.path / HOOK_DIR).mkdir()
        self.manifest = RunManifest()
        self.start_mono = self.end_mono = None
        self.start_unix = None
        self.exited = False         # the process is gone
        self.perf_died = False      # perf stopped on its own while the process lives
        self.runs, self.run_labels = [], {}   # what the uprobes timed (WindowCapiCapture, WindowPybindCapture)
        self.captures = window_captures(self, session, tail, uprobes, perf)
        self.perf = self.captures[0]

    def note(self, text):
        self.manifest.notes.append(text)

    def _each(self, phase, *args):
        for capture in self.captures:
            getattr(capture, phase)(*args)

    def start(self):
        pid = self.target.pid
        self.manifest = RunManifest(
            ortprof_version=__version__, name=self.target.service, mode="attach", command=self.target.cmdline,
            pid=pid, profiled_pid=pid, started_unix=time.time(), status="recording",
            options={"frequency": self.options.frequency, "call_graph": "dwarf", "stack_size": self.options.stack_size,
                     "futex": futex_usable(self.options), "profiler": "perf"},
            environment=self._environment())
        self.manifest.set_section("futex_probe", self._futex_probe())
        return self

    def _environment(self):
        try:
            affinity = sorted(os.sched_getaffinity(self.target.pid))
        except OSError:
            affinity = None
        return {"cpu": _cpu_info(), "affinity": affinity, "ort": _module_facts(self.target.ort_module),
                "process": {"pid": self.target.pid, "container": self.target.container, "pod": self.target.pod}}

    def _futex_probe(self) -> Usability:
        if not self.options.futex:
            return Usability(False, "the agent does not trace futex calls by default (their cost "
                             "grows with the workload's futex rate)", "ortprof agent --futex")
        return self.options.futex_probe or Usability(False, "not probed", None)

    def begin(self):
        """The captures start (perf's events on); False when perf is gone (or never came up)."""
        self._each("start", self.target.pid)
        return not (self.exited or self.perf_died)

    def open_window(self):
        self.start_mono = time.monotonic()
        self.start_unix = time.time()
        self._each("window_opened")

    def snapshot(self):
        self._each("tick")

    def alive(self):
        """Whether the window of this process goes on."""
        if self.exited or self.perf_died:
            return False
        if not psutil.pid_exists(self.target.pid):
            self.exited = True
        elif not self.perf.running():
            self.perf_died = not self.zombie()
            self.exited = not self.perf_died
        return not (self.exited or self.perf_died)

    def zombie(self):
        try:
            return psutil.Process(self.target.pid).status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return True

    def close_window(self):
        self.end_mono = time.monotonic()
        self._each("window_closing")

    def finish(self):
        """The captures write their files (perf.data, threads.csv, the hook's records of the
        window) and run.json sections; then run.json, which the report reads."""
        self.manifest.window = Window(self.start_mono, self.end_mono, round(self.end_mono - self.start_mono, 3))
        self._each("finish")
        self.manifest.status = "completed"
        if self.exited:
            self.manifest.notes.append("the process exited during the window")
        self.run.write_manifest(self.manifest)

    def result(self):
        """Analyze, build the pprof bytes, delete the run directory."""
        from ..analysis.report import build_report
        from ..exporters.pprof import build_message
        result = WindowResult(self.target, self.start_unix, self.start_unix + (self.end_mono - self.start_mono),
                              self.end_mono - self.start_mono, exited=self.exited, runs=self.runs,
                              run_labels=self.run_labels)
        try:
            result.profile, result.report = build_report(self.run)
            if result.profile.has_samples:
                message = build_message(result.profile, result.report)
                if not message.time_nanos:
                    message.time_nanos = round(self.start_unix * 1e9)
                result.pprof = gzip.compress(message.SerializeToString(), mtime=0)
        except OrtprofError as error:
            result.error = str(error)
        finally:
            self.discard()
        return result

    def discard(self):
        self._each("stop")
        shutil.rmtree(self.run.path, ignore_errors=True)


def futex_usable(options):
    return bool(options.futex and options.futex_probe is not None and options.futex_probe.usable)


def ensure_sessions(targets, options, perf, work_dir, sessions, log=None, uprobes=None, probe_python=None):
    """A running perf for each target in `sessions` (key -> PerfSession): kept from the last
    window, else started now, with the uprobes that time its runs (`uprobes`:
    uprobes.AgentUprobes; a Python process's dispatchers only where `probe_python(target)`
    says, not when the startup hook or an attach times it); those of processes no longer
    targeted are closed."""
    keys = {target.key for target in targets}
    for key in [key for key in sessions if key not in keys]:
        sessions.pop(key).close()
        if uprobes is not None:
            uprobes.release(key)
    for target in targets:
        python = probe_python(target) if probe_python is not None else True
        session = sessions.get(target.key)
        if session is not None and session.running() and (uprobes is None or uprobes.keeps(target, python)):
            continue
        if session is not None:
            # perf ended (the process exited, or perf failed), or its probes change (attached, or no
            # longer): its events must be closed before they can be removed
            sessions.pop(target.key).close()
        events = uprobes.events_for(target, python) if uprobes is not None else ()
        try:
            sessions[target.key] = PerfSession(target, options, perf, work_dir, futex_usable(options),
                                               events).start()
        except (OSError, OrtprofError) as error:
            if log:
                log.error("window-failed", pid=target.pid, reason=f"cannot start perf: {error}")
    return sessions


def close_sessions(sessions, uprobes=None):
    """Stop every perf; then the probes of their libraries can go."""
    while sessions:
        key, session = sessions.popitem()
        session.close()
        if uprobes is not None:
            uprobes.release(key)


def record_window(targets, options, perf, work_dir, tails, stop_event, log=None, sessions=None, uprobes=None):
    """One window of every target at once -> [WindowResult]. `sessions` (key -> PerfSession)
    carries each process's perf from one window to the next; without it, perf is started and
    stopped for this window. `uprobes` (uprobes.AgentUprobes): the probes timing the runs of
    native clients, and of Python processes whose runs no hook records (`tails`) time.
    `stop_event` (threading.Event) cuts the window short; nothing is analyzed then."""
    own_sessions = sessions is None
    sessions = ensure_sessions(targets, options, perf, work_dir, {} if own_sessions else sessions, log, uprobes,
                               lambda target: target.key not in tails)
    windows = []
    for target in targets:
        if target.key in sessions:
            windows.append(ProcessWindow(target, options, sessions[target.key], work_dir,
                                         tails.get(target.key), uprobes, perf).start())
    try:
        for window in windows:
            window.begin()
            window.open_window()
        end = time.monotonic() + options.seconds
        next_snapshot = time.monotonic() + SNAPSHOT_SECONDS
        while time.monotonic() < end and any(w.alive() for w in windows):
            if stop_event.wait(min(0.25, max(0.0, end - time.monotonic()))):
                return []
            for window in windows:
                if window.end_mono is None and not window.alive():
                    window.close_window()      # the process is gone: its window ends here
            if time.monotonic() >= next_snapshot:
                next_snapshot += SNAPSHOT_SECONDS
                for window in windows:
                    if window.end_mono is None:
                        window.snapshot()
        for window in windows:
            if window.end_mono is None:
                window.close_window()
        results = []
        for window in windows:
            window.finish()
            if window.perf_died and log:
                log.warning("perf-failed", pid=window.target.pid, exit_code=window.session.exit_code,
                            reason=profilers.perf_permission_hint(window.session.log_tail()))
            results.append(window.result())
        return results
    finally:
        for window in windows:
            window.discard()
        if own_sessions:
            close_sessions(sessions, uprobes)
