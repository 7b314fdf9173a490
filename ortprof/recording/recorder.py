"""`ortprof record`: launch (or attach to) a workload and record it into a run directory.

Order of events (each step leaves the manifest consistent, so Ctrl+C, SIGTERM
or a dying workload at any point keeps what was recorded):
  run dir -> [bpftrace's futex counters] -> [cgroup] -> workload with hook -> thread CPU sampler
  -> warm-up (hook's `warm`, --delay, or timeout) -> fingerprint + cgroup stats
  -> profilers -> duration / exit / Ctrl+C -> stop profilers -> stop workload -> manifest
"""
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import psutil

from .. import __version__
from ..checks import OK
from ..errors import EnvironmentProblem, InputError, OrtprofError, WorkloadError
from ..stopping import Interrupted, ignore_stop_signals, stop_signals_raise_interrupted
from ..hook import end_ort_profiles, hook_environment, read_hook_records, warm_event
from ..model.manifest import RunManifest, Warmup, Window
from ..signals.cgroup import CgroupRecord
from ..signals.futex import BPF_METHOD, PERF_METHOD, FutexPlan, FutexProbe, choose_futex_method, \
    futex_probe_outcome
from ..signals.runs import HookSummary
from ..signals.threads import ThreadsSummary
from . import futex_bpf, profilers, rundir
from .threadstats import ThreadCpuSampler, read_thread_cpu
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


def _copy_maps(pid, path):
    try:
        with open(f"/proc/{pid}/maps") as source, open(path, "w") as target:
            target.write(source.read())
    except OSError:
        pass


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
    def __init__(self, options, console=None):
        self.options = options
        self.console = console
        self.manifest = RunManifest()
        self.run = None
        self.workload = None
        self.sampler = None
        self.profilers = {}
        self.cgroup = None
        self._cgroup_dir = None

    # -- manifest ---------------------------------------------------------
    def _save(self):
        self.manifest.files = self.run.file_sizes()
        self.run.write_manifest(self.manifest)

    @property
    def futex_plan(self) -> FutexPlan:
        return self.manifest.section("futex", FutexPlan)

    @property
    def futex_probe(self) -> FutexProbe:
        return self.manifest.section("futex_probe", FutexProbe)

    def _note(self, text):
        self.manifest.notes.append(text)
        if self.console:
            self.console.print(f"[yellow]ortprof:[/] {text}")

    # -- main -------------------------------------------------------------
    def record(self):
        options = self.options
        if options.pid is None:
            resolve_executable(options.command)
        elif not psutil.pid_exists(options.pid):
            raise InputError(f"--pid {options.pid}: no such process")
        elif not _ort_loaded(options.pid):
            raise InputError(f"--pid {options.pid}: onnxruntime is not loaded in that process")
        chosen, fallback_notes, futex_check = choose_profilers(options.profiler, options.futex)
        futex_probe = futex_probe_outcome(options, chosen, futex_check)
        futex_plan = choose_futex_method(options, chosen, futex_probe)
        if futex_plan.method == BPF_METHOD and not futex_probe.usable:
            # Counted in BPF all the same; only the stacks are missing.
            futex_probe = FutexProbe(True, None, None)
        if options.futex and "perf" in chosen and not futex_probe.usable:
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
            self._note(note)
        if futex_plan.method == PERF_METHOD and futex_plan.bpf.usable is False:
            self._note(f"futex calls are traced by perf, one event per call: {futex_plan.bpf.reason} "
                       f"(fix: {futex_plan.bpf.fix})")
        elif futex_plan.method == BPF_METHOD and futex_plan.stack_sample_period is None:
            self._note("futex calls are counted in BPF, without stacks: perf cannot record the futex tracepoint")

        with stop_signals_raise_interrupted():
            return self._record(chosen)

    def _record(self, chosen):
        status = "completed"
        failure = None
        try:
            try:
                if self.futex_plan.method == BPF_METHOD:
                    self._start_futex_counter(self.futex_plan)
                profiled_pid = self._start_workload()
                profiled_pid = self._await_warmup(profiled_pid)
                self._start_profiling(profiled_pid, chosen)
                self._profile_for_duration()
            finally:
                self._stop_profiling()
        except Interrupted as why:
            status = "interrupted"
            self._note(f"interrupted by {why}; profilers stopped, everything recorded is kept")
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
            self._count_futex_calls_of(options.pid)
            self.sampler = ThreadCpuSampler(options.pid, self.run.file(rundir.THREADS_CSV), options.thread_hz).start()
            return options.pid
        preexec = None
        if options.cpus is not None:
            from ..cgroup import LimitedCgroup
            self.cgroup = LimitedCgroup(options.cpus, name=f"ortprof-{os.getpid()}")
            self.cgroup.__enter__()
            self.manifest.cgroup_created = self.cgroup.describe()
            preexec = self.cgroup.add_self
        env = hook_environment(os.environ, self.run.file(rundir.HOOK_DIR), options.warmup_runs,
                               options.session_overrides, options.extra_python_paths, options.ort_profile)
        self.workload = Workload(options.command, env, self.run.file(rundir.WORKLOAD_LOG), preexec,
                                 stdout_to_stderr=options.stdout_for_json)
        self.manifest.pid, self.manifest.status = self.workload.pid, "warming-up"
        self._save()
        self._count_futex_calls_of(self.workload.pid)
        self.sampler = ThreadCpuSampler(self.workload.pid, self.run.file(rundir.THREADS_CSV), options.thread_hz).start()
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
            hook_dir = self.run.file(rundir.HOOK_DIR)
            with self._status(f"waiting for {options.warmup_runs} run() calls (warm-up)"):
                while True:
                    warm = warm_event(hook_dir)
                    if warm is not None:
                        if warm.get("pid") and warm["pid"] != pid and psutil.pid_exists(warm["pid"]):
                            self._note(f"ORT runs in child process {warm['pid']}: profiling that one")
                            pid = warm["pid"]
                            self.sampler.retarget(pid)
                            self._count_futex_calls_of(pid)
                        break
                    if time.monotonic() - started > options.warmup_timeout:
                        mode = "timeout"
                        self._note(f"no ORT run() seen within {options.warmup_timeout:g}s "
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

    def _start_profiling(self, pid, chosen):
        from ..environment import fingerprint
        options = self.options
        self.manifest.environment = fingerprint(pid)
        self.manifest.set_section("cgroup", self._cgroup_snapshot(pid, "before"))
        _copy_maps(pid, self.run.file(rundir.MAPS))
        self.manifest.window = Window(start_mono=time.monotonic())
        if "perf" in chosen:
            period = self.futex_plan.stack_sample_period
            argv = profilers.perf_command(chosen["perf"], pid, str(self.run.file(rundir.PERF_DATA)),
                                          options.frequency, options.call_graph, options.stack_size,
                                          futex=bool(period), futex_stack_period=period if period != 1 else None)
            perf = profilers.ProfilerProcess("perf", argv, str(self.run.file(rundir.PERF_LOG)),
                                             str(self.run.file(rundir.PERF_DATA))).start()
            self.profilers["perf"] = perf
            self._wait_until_attached(perf)
            failed = perf.early_failure()
            if failed is not None:
                self._raise_if_workload_gone("perf")
                raise profilers_error("perf", failed)
        if "py-spy" in chosen:
            argv = profilers.pyspy_command(chosen["py-spy"], pid, str(self.run.file(rundir.PYSPY_OUT)),
                                           options.pyspy_rate)
            pyspy = profilers.ProfilerProcess("py-spy", argv, str(self.run.file(rundir.PYSPY_LOG)),
                                              str(self.run.file(rundir.PYSPY_OUT))).start()
            self.profilers["py-spy"] = pyspy
            failed = pyspy.early_failure()
            if failed is not None:
                self._raise_if_workload_gone("py-spy")
                raise profilers_error("py-spy", failed)
        self.manifest.status = "recording"
        self._save()

    def _start_futex_counter(self, plan):
        """bpftrace's counters, attached before the workload starts: compiling the program
        takes ~0.4 s of CPU that would otherwise slow the workload's first requests on a
        busy machine. When it does not attach, futex calls are traced by perf (or, with
        --futex-method bpf, record stops)."""
        from ..environment import bpftrace_info
        try:
            with self._status("attaching the futex counters (bpftrace)"):
                counter, seconds = futex_bpf.start_futex_counter(
                    (bpftrace_info() or {}).get("path") or "bpftrace", self.run.path)
        except EnvironmentProblem as problem:
            if plan.requested == "bpf":
                raise
            plan.bpf.usable, plan.bpf.reason = False, str(problem)
            plan.bpf.fix = "see `ortprof doctor --check futex-bpf`; or record with --futex-method perf"
            usable = self.futex_probe.usable
            plan.method, plan.stack_sample_period = (PERF_METHOD, 1) if usable else (None, None)
            self._note(f"futex calls are traced by perf, one event per call: {problem}")
            return
        self.profilers["bpftrace"] = counter
        plan.bpftrace_attach_seconds = round(seconds, 3)

    def _count_futex_calls_of(self, pid):
        if "bpftrace" in self.profilers:
            futex_bpf.set_target(pid)

    def _open_window(self):
        self.manifest.window.start_mono = time.monotonic()
        if "bpftrace" in self.profilers:
            futex_bpf.mark_window(opening=True)

    def _raise_if_workload_gone(self, profiler):
        pid = self.manifest.profiled_pid
        if (self.workload is not None and not self.workload.running()) or not psutil.pid_exists(pid):
            code = self.workload.finish() if self.workload is not None else None
            self.manifest.exit_code = code
            raise WorkloadError(f"the workload exited (code {code}) right after warm-up, before {profiler} "
                                f"could attach; record a longer run (e.g. more requests)")

    def _wait_until_attached(self, perf, timeout=2.0):
        """Open the window when perf has its events open, not when it was launched:
        perf's start-up (~0.1-0.2 s) would otherwise count as unsampled time."""
        deadline = time.monotonic() + timeout
        fd_dir = f"/proc/{perf.process.pid}/fd"
        while time.monotonic() < deadline:
            try:
                if any(os.readlink(os.path.join(fd_dir, fd)) == "anon_inode:[perf_event]" for fd in os.listdir(fd_dir)):
                    time.sleep(0.05)   # the rest of perf's events open and are enabled in the same burst
                    break
            except OSError:
                break
            time.sleep(0.01)
        self._open_window()

    def _profile_for_duration(self):
        options = self.options
        start = self.manifest.window.start_mono
        pid = self.manifest.profiled_pid
        with self._progress(options.duration) as tick:
            while time.monotonic() - start < options.duration:
                if not psutil.pid_exists(pid) or (self.workload and not self.workload.running()):
                    self._note("the workload exited during profiling")
                    break
                if any(p.process.poll() is not None for p in self.profilers.values()):
                    dead = [name for name, p in self.profilers.items() if p.process.poll() is not None]
                    self._note(f"{', '.join(dead)} stopped early: {self.profilers[dead[0]].log_tail()}")
                    break
                time.sleep(0.1)
                tick(time.monotonic() - start)

    def _stop_profiling(self):
        # The window closes when the stop is signalled: perf's shutdown (build-id
        # collection) is not part of what it sampled.
        window = self.manifest.window
        closing = window is not None and window.end_mono is None
        if closing:
            window.end_mono = time.monotonic()
            if "bpftrace" in self.profilers:
                futex_bpf.mark_window(opening=False)
            window.seconds = round(window.end_mono - window.start_mono, 3)
            after = self._cgroup_snapshot(self.manifest.profiled_pid, "after")
            record = self.manifest.section("cgroup", CgroupRecord)
            record.stat_after, record.error = after.stat_after, after.error or record.error
        for profiler in self.profilers.values():
            profiler.stop()
        if closing and self.options.ort_profile and self.workload is not None:
            self._end_ort_profiles()

    def _end_ort_profiles(self):
        """ORT's profiles end with the window: the hook writes them while the workload still runs."""
        still_open = end_ort_profiles(self.run.file(rundir.HOOK_DIR))
        if still_open:
            self._note(f"ORT's profile of {len(still_open)} session(s) was not finished when the window closed "
                       "(no run() since, or a long write); the hook ends it when the workload exits")

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
            if self.sampler is not None:
                self.sampler.stop()
                if self.sampler.error:
                    self.manifest.errors.append(self.sampler.error)
            if self.cgroup is not None:
                record = self.manifest.section("cgroup", CgroupRecord) or CgroupRecord()
                record.group_final = self.cgroup.stat()
                self.manifest.set_section("cgroup", record)
                self.cgroup.__exit__(None, None, None)
            if failure is not None:
                self.manifest.errors.append(str(failure))
            self.manifest.profilers = {name: p.describe() for name, p in self.profilers.items()}
            threads = self._thread_summary()
            if threads is not None:
                self.manifest.set_section("threads", threads)
            self.manifest.set_section("hook", self._hook_summary())
            self.manifest.status = status
            self._save()

    # -- summaries --------------------------------------------------------
    def _cgroup_snapshot(self, pid, when) -> CgroupRecord:
        """The cgroup's limit ("before" only) and its cpu.stat now, as stat_<when>."""
        from ..cgroup import cpu_stat, process_cgroup_dir, process_cpu_limit
        record, stat = CgroupRecord(), None
        try:
            if self.cgroup is not None:
                stat = self.cgroup.stat()
                record.limit = {"cpus": self.options.cpus, "source": "ortprof --cpus"}
            elif pid:
                # The group's path outlives the process: "after" still reads after an exit.
                if when == "before":
                    self._cgroup_dir = process_cgroup_dir(pid)
                    record.limit = process_cpu_limit(pid)
                stat = cpu_stat(self._cgroup_dir or pid)
        except OrtprofError as error:
            record.error = str(error)
        except OSError:
            pass
        setattr(record, f"stat_{when}", stat)
        return record

    def _thread_summary(self) -> Optional[ThreadsSummary]:
        window = self.manifest.window or Window()
        if not self.sampler:
            return None
        used = read_thread_cpu(self.run.file(rundir.THREADS_CSV), window.start_mono, window.end_mono)
        seconds = window.seconds
        return ThreadsSummary(
            sample_hz=self.sampler.hz, csv=rundir.THREADS_CSV,
            window_cpu_pct={str(tid): round(100 * cpu / seconds, 2) for tid, cpu in sorted(used.items())}
            if seconds else {},
            process_cpu_pct=round(100 * sum(used.values()) / seconds, 2) if seconds else None,
            names={str(tid): name for tid, name in self.sampler.thread_names.items()})

    def _hook_summary(self) -> HookSummary:
        summary = HookSummary(dir=rundir.HOOK_DIR)
        for record in read_hook_records(self.run.file(rundir.HOOK_DIR)):
            if record.get("event") == "session":
                summary.sessions += 1
            elif record.get("event") == "runs":
                summary.runs += len(record.get("runs", ()))
        return summary

    # -- terminal ---------------------------------------------------------
    def _status(self, text):
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
            names = "+".join(self.profilers) or "no profiler"
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
            "call_graph", "stack_size", "futex", "futex_method", "futex_stack_period", "pyspy_rate", "cpus", "thread_hz", "session_overrides")
    return {key: getattr(options, key) for key in keep}
