"""The agent's loop: every interval, find the ORT processes, record one window of all
of them at once, turn each into a report, Prometheus metrics and a pprof push.

The agent runs niced (its perf children inherit it), records at a low frequency,
keeps one perf per process across windows (started once, enabled for each window),
decodes perf data once per window and never waits on Pyroscope: pushes go through
the spool's thread. run() is timed for every kind of ORT process: a Python process
launched with the startup hook by its records (hooktail.py); with --attach, any other
Python process by the hook's recording attached to it (attachments.py); otherwise by
uprobes its perf records (uprobes.py: one probe group for the agent), on a native
client's libonnxruntime.so C API (capi.py) or a Python process's pybind11 dispatchers
(pybind.py). SIGTERM or SIGINT ends the loop: a window in progress is cut short, the
attached processes detached, the perf processes stopped and their data deleted, the
probes removed, the spool is given a few seconds to drain and the rest stays on disk
for the next start.
"""
import os
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Optional

from ..errors import InputError
from . import discovery
from .attachments import AgentAttachments
from .hooktail import HookTail
from .logs import StructuredLog
from .metrics import AgentMetrics
from .perfsession import stale_sessions
from .pyroscope import Pusher, Spool, check_url
from .sessions import session_labels
from .uprobes import AgentUprobes
from .window import WindowOptions, close_sessions, record_window

DEFAULT_WORK_DIR = "/tmp/ortprof-agent"
IDLE_RESCAN_SECONDS = 5.0     # with no ORT process yet, look again this often
DRAIN_SECONDS = 5.0


@dataclass
class AgentOptions:
    interval: float = 60.0
    window: WindowOptions = field(default_factory=WindowOptions)
    pids: tuple = ()
    match: Optional[object] = None          # compiled regex on the command line
    service: Optional[str] = None
    host: str = field(default_factory=socket.gethostname)
    pyroscope: Optional[str] = None
    user: Optional[str] = None
    password: Optional[str] = None
    tenant: Optional[str] = None
    metrics_port: Optional[int] = None
    metrics_addr: str = "0.0.0.0"
    work_dir: str = DEFAULT_WORK_DIR
    spool_max_bytes: int = 64 << 20
    nice: int = 10
    attach: bool = False                    # attach the startup hook's recording to Python processes


def _wait_gone(pids, timeout=5.0):
    import psutil
    processes = []
    for pid in pids:
        try:
            processes.append(psutil.Process(pid))
        except psutil.Error:
            pass
    psutil.wait_procs(processes, timeout=timeout)


def check_perf(futex):
    """perf's path and the futex probe, or EnvironmentProblem with the fix."""
    from ..recording.recorder import choose_profilers
    from ..signals.futex import futex_probe_outcome
    chosen, _notes, futex_check = choose_profilers("perf", futex)
    probe = futex_probe_outcome(SimpleNamespace(futex=futex, profiler="perf"), chosen, futex_check) if futex else None
    return chosen["perf"], probe


class Agent:
    def __init__(self, options: AgentOptions, log: StructuredLog = None):
        self.options = options
        self.log = log or StructuredLog()
        self.stop_event = threading.Event()
        self.metrics = AgentMetrics()
        self.targets = {}            # key -> Target
        self.tails = {}              # key -> HookTail
        self.sessions = {}           # key -> PerfSession: each process's perf, kept across windows
        self.missing_pids = set()    # --pid values already reported as not ORT processes
        self.pusher = None
        self.perf = None
        self.uprobes = None          # AgentUprobes: the probes timing runs no hook records time
        self.attachments = None      # AgentAttachments, with --attach
        self.windows_dir = os.path.join(options.work_dir, "windows")

    # -- setup ---------------------------------------------------------------
    def prepare(self, serve_metrics=True):
        options = self.options
        self.perf, probe = check_perf(options.window.futex)
        options.window.futex_probe = probe
        if probe and not probe.usable:
            self.log.warning("futex-unavailable", reason=probe.reason, fix=probe.fix)
        try:
            os.makedirs(self.windows_dir, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot write the agent's directory {options.work_dir}: {error.strerror or error}")
        stale_perfs = stale_sessions(self.windows_dir)   # perf processes of a killed agent
        for pid in stale_perfs:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _wait_gone(stale_perfs)     # their uprobe events must be closed before the probes can be removed
        for stale in os.listdir(self.windows_dir):   # raw perf data of a killed agent
            shutil.rmtree(os.path.join(self.windows_dir, stale), ignore_errors=True)
        # perf's build-id cache goes with the agent's files: the root filesystem may be read-only.
        os.environ.setdefault("PERF_BUILDID_DIR", os.path.join(options.work_dir, "buildid"))
        self.uprobes = AgentUprobes(self.perf, self.log)
        self.uprobes.start()         # probe groups a killed agent left
        if options.attach:
            self.attachments = AgentAttachments(options.work_dir, self.log)
            try:
                self.attachments.prepare()
            except OSError as error:
                raise InputError(f"cannot write the agent's directory {self.attachments.directory}: "
                                 f"{error.strerror or error}")
        if options.nice:
            try:
                os.nice(options.nice)
            except OSError:
                pass
        if options.pyroscope:
            problem = check_url(options.pyroscope)
            if problem:
                self.log.error("pyroscope-disabled", url=options.pyroscope,
                               reason=f"{problem}; profiles are not pushed (metrics go on)")
            else:
                spool = Spool(os.path.join(options.work_dir, "spool"), options.spool_max_bytes, self.log,
                              on_drop=self.metrics.dropped.inc)
                self.pusher = Pusher(options.pyroscope, spool, self.log, options.user, options.password,
                                     options.tenant, self.metrics).start()
        if serve_metrics and options.metrics_port is not None:
            try:
                self.metrics.serve(options.metrics_port, options.metrics_addr)
            except OSError as error:
                raise InputError(f"--metrics-port {options.metrics_port}: cannot listen on "
                                 f"{options.metrics_addr}: {error.strerror or error}")

    # -- processes -----------------------------------------------------------
    def refresh(self):
        """Discover; log and track processes that appeared, forget those that are gone."""
        options = self.options
        found = {target.key: target for target in discovery.discover(
            options.pids or None, options.match, options.service, exclude={os.getpid()})}
        for pid in options.pids:
            if pid not in {key[0] for key in found} and pid not in self.missing_pids:
                self.missing_pids.add(pid)
                self.log.warning("pid-not-profiled", pid=pid, reason="no such process, or ORT is not loaded in it")
        for key, target in found.items():
            if key not in self.targets:
                self.log.info("process-found", pid=target.pid, service=target.service, container=target.container,
                              pod=target.pod, ort_version=target.ort_version, module=target.ort_module,
                              hook=bool(target.hook_dir))
                self.metrics.track(target)
                tail = HookTail.of(target)
                if tail is not None:
                    tail.take()   # what ran before the agent saw the process is not counted
                    self.tails[key] = tail
        for key in list(self.targets):
            if key not in found:
                target = self.targets.pop(key)
                self.tails.pop(key, None)
                if self.attachments is not None:
                    self.attachments.release(key)
                session = self.sessions.pop(key, None)
                if session is not None:
                    session.close()
                if self.uprobes is not None:
                    self.uprobes.release(key)     # after its perf: events in use cannot be deleted
                self.metrics.forget(target)
                self.log.info("process-gone", pid=target.pid, service=target.service)
        self.targets.update(found)
        return list(found.values())

    def attach_all(self):
        """--attach: every followed Python process not launched with the hook is attached (again,
        when its attachment was lost); refused ones have their runs probed."""
        if self.attachments is None:
            return
        for key, target in self.targets.items():
            if target.hook_dir or not discovery.is_python(target):
                continue
            if self.attachments.holds(key) and key in self.tails:
                old = self.tails[key]   # its last records before a re-attach replaces the tail
                if not self.attachments.held[key].attached:
                    self.metrics.observe_runs(target, old.take(), session_labels(old.static))
            tail = self.attachments.follow(target)
            if tail is None:
                self.tails.pop(key, None)
            else:
                self.tails[key] = tail

    def poll_side_data(self):
        """Latency records and throttling counters, whole intervals (not only windows)."""
        from ..cgroup import cpu_stat
        for key, target in self.targets.items():
            tail = self.tails.get(key)
            if tail is not None:
                self.metrics.observe_runs(target, tail.take(), session_labels(tail.static))
            try:
                self.metrics.throttling(target, cpu_stat(target.pid))
            except OSError:
                pass
        if self.attachments is not None:
            self.attachments.trim()
        if self.pusher is not None:
            self.metrics.spooled.set(len(self.pusher.spool.items()))

    # -- windows ---------------------------------------------------------------
    def record(self, targets):
        started = time.monotonic()
        results = record_window(targets, self.options.window, self.perf, self.windows_dir, self.tails,
                                self.stop_event, self.log, self.sessions, self.uprobes)
        for result in results:
            self.handle(result)
        return results, time.monotonic() - started

    def handle(self, result):
        target, report = result.target, result.report
        if result.runs:        # runs timed by the uprobes in the window (C API, pybind11 dispatchers)
            self.metrics.observe_runs(target, result.runs, result.run_labels)
        if result.error or report is None:
            self.metrics.windows.labels("failed").inc()
            self.log.error("window-failed", pid=target.pid, service=target.service, reason=result.error)
            return
        self.metrics.window(target, report, report.ort.usable_cores)
        if result.pprof is None:
            self.metrics.windows.labels("empty").inc()
            self.log.warning("window-empty", pid=target.pid, service=target.service, exited=result.exited,
                             reason=report.empty_sections.get("totals") or "no CPU samples")
            return
        self.metrics.windows.labels("ok").inc()
        pushed = None
        if self.pusher is not None:
            pushed = self.pusher.push(target.service, target.labels(self.options.host), result.start_unix,
                                      result.end_unix, self.options.window.frequency, result.pprof)
        totals = report.totals
        self.log.info("window", pid=target.pid, service=target.service, seconds=round(result.seconds, 2),
                      samples=report.samples, cpu_pct=totals.cpu_pct, spin_pct=totals.spin_pct,
                      caller_spin_pct=totals.caller_spin_pct, exited=result.exited or None,
                      findings=",".join(f.id for f in report.findings) or None,
                      pprof_bytes=len(result.pprof), spooled=pushed)

    # -- the loop --------------------------------------------------------------
    def run(self):
        self._install_signals()
        self.prepare()
        options = self.options
        self.log.info("agent-started", pid=os.getpid(), interval=options.interval, window=options.window.seconds,
                      frequency=options.window.frequency, futex=options.window.futex, pyroscope=options.pyroscope,
                      metrics_port=options.metrics_port, host=options.host)
        idle_logged = False
        try:
            while not self.stop_event.is_set():
                cycle = time.monotonic()
                targets = self.refresh()
                self.poll_side_data()
                self.attach_all()
                if targets:
                    idle_logged = False
                    _results, took = self.record(targets)
                    self.log.info("cycle", processes=len(targets), seconds=round(took, 2))
                    self._wait_until(cycle + options.interval)
                else:
                    if not idle_logged:
                        self.log.info("no-processes", reason="no process has ORT loaded" +
                                      (" among the --pid/--match ones" if options.pids or options.match else ""))
                        idle_logged = True
                    self._wait_until(cycle + min(options.interval, IDLE_RESCAN_SECONDS))
        finally:
            self.shutdown()
        return 0

    def _wait_until(self, deadline):
        while not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.stop_event.wait(min(left, 5.0))

    def _install_signals(self):
        def stop(signum, _frame):
            if not self.stop_event.is_set():
                self.log.info("agent-stopping", signal=signal.Signals(signum).name)
            self.stop_event.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)

    def shutdown(self):
        spooled = 0
        if self.attachments is not None:
            self.attachments.close()
        close_sessions(self.sessions, self.uprobes)
        if self.uprobes is not None:
            self.uprobes.close()
        if self.pusher is not None:
            self.pusher.drain(DRAIN_SECONDS)
            self.pusher.stop()
            spooled = len(self.pusher.spool.items())
        shutil.rmtree(self.windows_dir, ignore_errors=True)
        self.log.info("agent-stopped", spooled=spooled or None)

    # -- --once ----------------------------------------------------------------
    def once(self):
        """One window of every process found; [WindowResult]."""
        self._install_signals()
        self.prepare(serve_metrics=False)
        try:
            targets = self.refresh()
            self.attach_all()
            if not targets:
                raise InputError("no running process has ORT loaded" +
                                 (" among --pid/--match" if self.options.pids or self.options.match else "") +
                                 "; start the workload first")
            results, _took = self.record(targets)
            if self.stop_event.is_set():
                raise KeyboardInterrupt
            self.poll_side_data()      # the hook's and attachments' runs into the histogram, as each interval
            return results
        finally:
            self.shutdown()

