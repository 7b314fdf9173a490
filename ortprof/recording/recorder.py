"""`ortprof record`: launch (or attach to) a workload and record it into a run directory.

What is recorded is the signals' business (ortprof.signals): each has a Capture
the recorder drives through the same phases. Order of events (each step leaves
the manifest consistent, so Ctrl+C, SIGTERM or a dying workload at any point
keeps what was recorded):
  run dir -> before_workload (bpftrace's futex counters, the --cpus group)
  -> workload with the captures' environment (the hook) -> follow(pid) (thread CPU sampler)
  -> warm-up (hook's `warm`, --delay, or timeout) -> fingerprint -> start (cgroup stats, perf)
  -> window opens (futex mark, py-spy) -> duration / exit / Ctrl+C -> window closes
  -> stop (profilers, ORT's profiles) -> stop workload -> finish (run.json sections) -> manifest
"""
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import psutil

from .. import __version__
from ..errors import EnvironmentProblem, InputError, OrtprofError, WorkloadError
from ..hook import warm_event
from ..model.manifest import RunManifest, Warmup, Window
from ..signals import SIGNALS
from ..signals.base import Usability
from ..signals.futex import BPF_METHOD, PERF_METHOD, choose_futex_method, futex_probe_outcome
from ..signals.runs import HOOK_DIR
from ..stopping import Interrupted, ignore_stop_signals, stop_signals_raise_interrupted
from . import profilers, rundir
from .workload import Workload, resolve_executable

PROFILER_CHOICES = ("auto", "perf", "py-spy", "both", "none")
FUTEX_METHOD_CHOICES = ("auto", "bpf", "perf")


@dataclass
class RecordOptions:
    command: list = field(default_factory=list)
    pid: Optional[int] = None
    name: Optional[str] = None
    output: Optional[str] = None
    duration: float = 10.0
    delay: Optional[float] = None
    warmup_runs: int = 5
    warmup_timeout: float = 60.0
    profiler: str = "auto"
    frequency: int = profilers.DEFAULT_FREQUENCY
    call_graph: str = "dwarf"
    stack_size: int = profilers.DEFAULT_STACK_SIZE
    futex: bool = True
    futex_method: str = "auto"        # auto: counted in BPF when usable, else perf's per-call tracepoints
    futex_stack_period: int = profilers.FUTEX_STACK_PERIOD
    pyspy_rate: int = 100
    cpus: Optional[float] = None
    thread_hz: float = 10.0
    extra_python_paths: list = field(default_factory=list)
    ort_build: Optional[dict] = None
    session_overrides: Optional[dict] = None
    ort_profile: bool = False         # ORT's own per-node profiler in every session (the hook turns it on)
    attach: bool = True               # --pid of Python: attach the hook's recording (False: dispatcher probes only)
    sched: Optional[bool] = None      # --sched / --no-sched; None: when the compiled BPF program is built (signals/sched)
    progress: bool = True
    stdout_for_json: bool = False     # --json: the workload's stdout goes to stderr


def choose_profilers(requested, futex=True):
    """The profilers to run, a note when 'auto' had to fall back, and the
    "futex-tracepoints" check when perf was chosen with `futex` (else None)."""
    from ..doctor import require_perf, require_pyspy
    from ..environment import find_tool
    notes = []
    if requested == "none":
        return {}, notes, None
    wanted_perf = requested in ("perf", "both", "auto")
    chosen = {}
    futex_check = None
    if wanted_perf:
        try:
            checks = require_perf(futex)
            futex_check = next((check for check in checks if check.id == "futex-tracepoints"), None)
            chosen["perf"] = find_tool("perf")
        except EnvironmentProblem as problem:
            if requested != "auto":
                raise
            notes.append(f"perf is not usable ({problem}); falling back to py-spy. "
                         "py-spy cannot see ORT's pool worker threads: spin detection needs perf")
    if requested in ("py-spy", "both") or (requested == "auto" and "perf" not in chosen):
        require_pyspy()
        chosen["py-spy"] = find_tool("py-spy")
    return chosen, notes, futex_check


def _ort_loaded(pid):
    try:
        return any("onnxruntime" in m.path for m in psutil.Process(pid).memory_maps(grouped=True))
    except (psutil.Error, OSError):
        return False


def default_run_name(options):
    if options.name:
        return options.name
    if options.pid:
        return f"pid{options.pid}"
    argv = options.command
    base = os.path.basename(argv[0])
    if base.startswith("python") and len(argv) > 1:
        if argv[1] == "-m" and len(argv) > 2:
            return argv[2].split(".")[-1] if argv[2] != "ortprof.demo" else "demo"
        return os.path.splitext(os.path.basename(argv[1]))[0]
    return base


class Recorder:
    """One recording: the run directory, the workload and the captures of the signals it records
    (ortprof.signals: each signal's Capture is driven through the phases below)."""

    def __init__(self, options, console=None):
        self.options = options
        self.console = console
        self.manifest = RunManifest()
        self.run = None
        self.workload = None
        self.chosen = {}        # profiler name -> executable (choose_profilers)
        self.captures = []      # the signals' Captures, in SIGNALS order

    # -- manifest ---------------------------------------------------------
    def _save(self):
        self.manifest.files = self.run.file_sizes()
        self.run.write_manifest(self.manifest)

    def note(self, text):
        self.manifest.notes.append(text)
        if self.console:
            self.console.print(f"[yellow]ortprof:[/] {text}")

    def _each(self, phase, *args):
        for capture in self.captures:
            getattr(capture, phase)(*args)

    def _each_to_the_end(self, phase):
        """`phase` of every capture even when one raises (stopping and saving must reach them
        all: a bpftrace or perf left running would outlive ortprof); the first error is raised after."""
        error = None
        for capture in self.captures:
            try:
                getattr(capture, phase)()
            except BaseException as exc:   # noqa: B902 - re-raised below, once the others ran
                error = error or exc
        if error is not None:
            raise error

    def _processes(self):
        return {name: process for capture in self.captures for name, process in capture.processes().items()}

    # -- main -------------------------------------------------------------
    def record(self):
        options = self.options
        if options.pid is None:
            resolve_executable(options.command)
        elif not psutil.pid_exists(options.pid):
            raise InputError(f"--pid {options.pid}: no such process")
        elif not _ort_loaded(options.pid):
            raise InputError(f"--pid {options.pid}: onnxruntime is not loaded in that process")
        self.chosen, fallback_notes, futex_check = choose_profilers(options.profiler, options.futex)
        futex_probe = futex_probe_outcome(options, self.chosen, futex_check)
        futex_plan = choose_futex_method(options, self.chosen, futex_probe)
        if futex_plan.method == BPF_METHOD and not futex_probe.usable:
            # Counted in BPF all the same; only the stacks are missing.
            futex_probe = Usability(True, None, None)
        if options.futex and "perf" in self.chosen and not futex_probe.usable:
            # One line on stderr, whatever -q says: the report will lack its futex figures.
            print(f"ortprof: warning: no futex events will be recorded: {futex_probe.reason}; "
                  f"fix: {futex_probe.fix}", file=sys.stderr, flush=True)

        self.run = rundir.RunDirectory.create(default_run_name(options), options.output)
        self.manifest = RunManifest(
            ortprof_version=__version__, name=default_run_name(options), mode="attach" if options.pid else "launch",
            command=options.command or None, pid=options.pid,
            started_unix=time.time(), started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            status="starting", options=_options_for_manifest(options), ort_build=options.ort_build)
        self.manifest.set_section("futex_probe", futex_probe)
        self.manifest.set_section("futex", futex_plan)
        self._save()
        for note in fallback_notes:
            self.note(note)
        if futex_plan.method == PERF_METHOD and futex_plan.bpf.usable is False:
            self.note(f"futex calls are traced by perf, one event per call: {futex_plan.bpf.reason} "
                      f"(fix: {futex_plan.bpf.fix})")
        elif futex_plan.method == BPF_METHOD and futex_plan.stack_sample_period is None:
            self.note("futex calls are counted in BPF, without stacks: perf cannot record the futex tracepoint")
        self.captures = [capture for capture in (signal.capture(self) for signal in SIGNALS if signal.capture)
                         if capture is not None]

        with stop_signals_raise_interrupted():
            return self._record()

    def _record(self):
        status = "completed"
        failure = None
        try:
            try:
                self._each("before_workload")
                profiled_pid = self._start_workload()
                profiled_pid = self._await_warmup(profiled_pid)
                self._start_profiling(profiled_pid)
                self._profile_for_duration()
            finally:
                self._stop_profiling()
        except Interrupted as why:
            status = "interrupted"
            self.note(f"interrupted by {why}; profilers stopped, everything recorded is kept")
        except WorkloadError as error:
            status = "workload-failed"
            failure = error
        except OrtprofError as error:
            status = "failed"
            failure = error
        finally:
            self._finish(status, failure)
        if failure is None and self.manifest.status == "workload-failed":
            failure = WorkloadError(f"the workload exited with code {self.manifest.exit_code} during "
                                    f"profiling; what was recorded is in {self.run.path}")
        if failure is not None:
            raise failure
        if status == "interrupted":
            raise KeyboardInterrupt
        return self.run, self.manifest

    # -- steps ------------------------------------------------------------
    def _start_workload(self):
        options = self.options
        if options.pid:
            self.manifest.profiled_pid = options.pid
            self._each("follow", options.pid)
            return options.pid
        env = dict(os.environ)
        for capture in self.captures:
            env = capture.workload_environment(env)
        preexecs = [f for f in (capture.workload_preexec() for capture in self.captures) if f is not None]
        preexec = (lambda: [f() for f in preexecs]) if preexecs else None
        self.workload = Workload(options.command, env, self.run.file(rundir.WORKLOAD_LOG), preexec,
                                 stdout_to_stderr=options.stdout_for_json)
        self.manifest.pid, self.manifest.status = self.workload.pid, "warming-up"
        self._save()
        self._each("follow", self.workload.pid)
        return self.workload.pid

    def _await_warmup(self, pid):
        options = self.options
        started = time.monotonic()
        if options.pid:
            mode = "delay" if options.delay else "none"
            if options.delay:
                time.sleep(options.delay)
        elif options.delay is not None:
            mode = "delay"
            self._wait_alive(options.delay, "during --delay")
        else:
            mode = "hook"
            hook_dir = self.run.file(HOOK_DIR)
            with self.status(f"waiting for {options.warmup_runs} run() calls (warm-up)"):
                while True:
                    warm = warm_event(hook_dir)
                    if warm is not None:
                        if warm.get("pid") and warm["pid"] != pid and psutil.pid_exists(warm["pid"]):
                            self.note(f"ORT runs in child process {warm['pid']}: profiling that one")
                            pid = warm["pid"]
                            self._each("follow", pid)
                        break
                    seen = [runs for runs in (c.warm_runs() for c in self.captures) if runs is not None]
                    if seen and max(seen) >= options.warmup_runs:
                        mode = "capi"     # a native client: its C API Run calls, counted by uprobes
                        break
                    if time.monotonic() - started > options.warmup_timeout:
                        mode = "timeout"
                        self.note(f"no ORT run() seen within {options.warmup_timeout:g}s "
                                  "(not a Python/ORT workload, or the hook could not load); profiling from now")
                        break
                    self._wait_alive(0.05, "before warm-up ended")
        self.manifest.warmup = Warmup(mode, options.warmup_runs, round(time.monotonic() - started, 3))
        self.manifest.profiled_pid = pid
        return pid

    def _wait_alive(self, seconds, when):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.workload is not None and not self.workload.running():
                code = self.workload.finish()
                self.manifest.exit_code = code
                raise WorkloadError(f"the workload exited with code {code} {when}; "
                                    f"its output is in {self.run.file(rundir.WORKLOAD_LOG)}")
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _start_profiling(self, pid):
        """The window opens once every capture records (perf has its events open), not when
        the profilers were launched: their start-up is not part of the window."""
        from ..environment import fingerprint
        self.manifest.environment = fingerprint(pid)
        self.manifest.window = Window(start_mono=time.monotonic())
        self._each("start", pid)
        self.manifest.window.start_mono = time.monotonic()
        self._each("window_opened")
        self.manifest.status = "recording"
        self._save()

    def check_started(self, process):
        """Raise with the fix when a profiler a capture just launched died right away."""
        failed = process.early_failure()
        if failed is None:
            return
        pid = self.manifest.profiled_pid
        if (self.workload is not None and not self.workload.running()) or not psutil.pid_exists(pid):
            code = self.workload.finish() if self.workload is not None else None
            self.manifest.exit_code = code
            raise WorkloadError(f"the workload exited (code {code}) right after warm-up, before {process.name} "
                                f"could attach; record a longer run (e.g. more requests)")
        raise profilers_error(process.name, failed)

    def _profile_for_duration(self):
        options = self.options
        start = self.manifest.window.start_mono
        pid = self.manifest.profiled_pid
        with self._progress(options.duration) as tick:
            while time.monotonic() - start < options.duration:
                if not psutil.pid_exists(pid) or (self.workload and not self.workload.running()):
                    self.note("the workload exited during profiling")
                    break
                processes = self._processes()
                dead = [name for name, p in processes.items() if p.process.poll() is not None]
                if dead:
                    self.note(f"{', '.join(dead)} stopped early: {processes[dead[0]].log_tail()}")
                    break
                time.sleep(0.1)
                tick(time.monotonic() - start)

    def _stop_profiling(self):
        # The window closes when the stop is signalled: perf's shutdown (build-id
        # collection) is not part of what it sampled.
        window = self.manifest.window
        try:
            if window is not None and window.end_mono is None:
                window.end_mono = time.monotonic()
                window.seconds = round(window.end_mono - window.start_mono, 3)
                self._each_to_the_end("window_closing")
        finally:
            self._each_to_the_end("stop")

    def _finish(self, status, failure):
        ignore_stop_signals()   # cleanup runs to the end; record() restores the handlers
        try:
            if self.workload is not None:
                code = self.workload.stop() if self.workload.running() else self.workload.finish()
                self.manifest.exit_code = code
                self.manifest.stopped_by_ortprof = self.workload.stopped_by_ortprof
                if (status == "completed" and code not in (0, None) and not self.workload.stopped_by_ortprof):
                    status = "workload-failed"
                    self.manifest.errors.append(f"the workload exited with code {code}")
        finally:
            try:
                self._each_to_the_end("finish")
            finally:
                if failure is not None:
                    self.manifest.errors.append(str(failure))
                self.manifest.profilers = {name: p.describe() for name, p in self._processes().items()}
                self.manifest.status = status
                self._save()

    # -- terminal ---------------------------------------------------------
    def status(self, text):
        if self.console is None or not self.options.progress:
            import contextlib
            return contextlib.nullcontext()
        return self.console.status(text)

    def _progress(self, total):
        import contextlib
        if self.console is None or not self.options.progress:
            return contextlib.nullcontext(lambda done: None)
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        @contextlib.contextmanager
        def bar():
            names = "+".join(self._processes()) or "no profiler"
            with Progress(TextColumn(f"recording ({names})"), BarColumn(),
                          TextColumn("{task.completed:.1f}/{task.total:g} s"), TimeRemainingColumn(),
                          console=self.console, transient=True) as progress:
                task = progress.add_task("record", total=total)
                yield lambda done: progress.update(task, completed=min(done, total))
        return bar()


def profilers_error(name, log_tail):
    hint = profilers.perf_permission_hint if name == "perf" else profilers.pyspy_permission_hint
    return EnvironmentProblem(hint(log_tail))


def _options_for_manifest(options):
    keep = ("duration", "delay", "warmup_runs", "warmup_timeout", "profiler", "frequency",
            "call_graph", "stack_size", "futex", "futex_method", "futex_stack_period", "pyspy_rate", "cpus", "thread_hz", "session_overrides", "attach", "sched")
    return {key: getattr(options, key) for key in keep}
