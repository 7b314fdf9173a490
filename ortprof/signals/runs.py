"""ORT's run() calls: sessions, their options and each run's span, from the startup hook."""
from dataclasses import dataclass
from typing import List, Optional

from .base import Capture, Signal
from .sched.section import LatencyBreakdown

HOOK_DIR = "hook"


@dataclass
class HookSummary:
    """run.json "hook": where the hook's records are and how many it wrote."""
    dir: Optional[str] = None
    sessions: int = 0
    runs: int = 0
    attach: Optional[str] = None        # --pid of a Python process: "attached", "hooked" (launched with the
                                        # hook: its own records are read), or why run() is not timed
    detach: Optional[str] = None        # how the attachment was taken out (detached by run | gdb, pending, gone)


@dataclass
class SessionSummary:
    session: int
    pid: Optional[int]
    model: Optional[str]
    providers: Optional[list]
    ort_version: Optional[str]
    options: dict
    runs: int
    rate_per_s: Optional[float]
    mean_ms: Optional[float]
    p50_ms: Optional[float]
    p95_ms: Optional[float]
    p99_ms: Optional[float]
    max_ms: Optional[float]
    variance_p99_p50: Optional[float]
    caller_tids: List[int]
    source: str = "hook"                 # what timed its runs: hook (startup hook) | attach | capi (C API uprobes)
    handle: Optional[str] = None         # the OrtSession* of a C API client
    options_known: bool = True           # False: created before ortprof looked, its options are unknown
    latency_breakdown: Optional[LatencyBreakdown] = None   # the sched signal's: why slow runs were slow


class HookCapture(Capture):
    """The startup hook, injected into a launched Python workload through its environment, or, with
    --pid, its recording attached to the running interpreter (ortprof.attach) before profiling
    starts and taken out when it ends: each session's options and every run()'s span, into hook/."""

    def __init__(self, recorder):
        super().__init__(recorder)
        self.attachment = None
        self.attach_status: Optional[str] = None
        self.detach_status: Optional[str] = None
        self.hooked_dir: Optional[str] = None     # the hook's own directory, as the process names it

    def follow(self, pid):
        """--pid of a Python ORT process: attach (its stop is before the window opens)."""
        from ..attach import AlreadyAttached, attach
        from ..errors import OrtprofError
        if self.recorder.options.pid is None or self.attach_status is not None or not python_ort(pid):
            return
        if not getattr(self.recorder.options, "attach", True):
            self.attach_status = "not attached (--no-attach)"
            return
        try:
            self.attachment = attach(pid, self.recorder.run.file(HOOK_DIR), warmup_runs=self.recorder.options.warmup_runs)
        except AlreadyAttached as already:
            if already.hook_dir:
                self.hooked_dir, self.attach_status = already.hook_dir, "hooked"
                return
            self.attach_status = str(already)
        except OrtprofError as error:
            self.attach_status = str(error)
        else:
            self.attach_status = "attached"
            self.recorder.note(f"the startup hook's recording is attached to process {pid} "
                               f"({len(self.attachment.sessions)} session(s) found); it is taken out when "
                               "recording ends")
            return
        self.recorder.note(f"the startup hook's recording could not be attached to process {pid}: {self.attach_status}")

    def stop(self):
        """Detach before finish() reads the records: the process flushes its last runs then."""
        if self.attachment is not None:
            attachment, self.attachment = self.attachment, None
            result = attachment.detach()
            self.detach_status = f"{result.status}" + (f" by {result.how}" if result.how else "")
            if result.status == "pending" and result.note:
                self.recorder.note(f"process {attachment.pid}: {result.note}")

    def workload_environment(self, env):
        from ..hook import hook_environment
        options = self.recorder.options
        return hook_environment(env, self.recorder.run.file(HOOK_DIR), options.warmup_runs,
                                options.session_overrides, options.extra_python_paths, options.ort_profile)

    def finish(self):
        from ..hook import read_hook_records
        if self.hooked_dir is not None:
            _copy_hook_records(self.recorder.options.pid, self.hooked_dir, self.recorder.run.file(HOOK_DIR))
        summary = HookSummary(dir=HOOK_DIR, attach=self.attach_status, detach=self.detach_status)
        for record in read_hook_records(self.recorder.run.file(HOOK_DIR)):
            if record.get("event") == "session":
                summary.sessions += 1
            elif record.get("event") == "runs":
                summary.runs += len(record.get("runs", ()))
        self.recorder.manifest.set_section("hook", summary)


def python_ort(pid) -> bool:
    """Whether process `pid` runs Python's onnxruntime (its pybind module is mapped)."""
    try:
        with open(f"/proc/{pid}/maps") as stream:
            return any("onnxruntime_pybind11_state" in line for line in stream)
    except OSError:
        return False


def _copy_hook_records(pid, hook_dir, into):
    """A process launched with the hook (by another ortprof, or the agent's deployment): its own
    records, read through its root (another mount namespace too)."""
    import glob
    import shutil
    for path in glob.glob(f"/proc/{pid}/root{hook_dir}/hook-*.jsonl"):
        try:
            shutil.copy(path, into)
        except OSError:
            continue


def load(run, loaded):
    """The hook's records: per-session latency in the window, the sessions' options, the run() spans
    on the profile's timeline, and the clock offset (Unix - monotonic) the hook measured."""
    from ..analysis.latency import session_latencies
    from ..hook import read_hook_records
    from ..model.profile import RunSpan
    span = loaded.manifest.window_span
    records = list(read_hook_records(run.file(HOOK_DIR)))
    loaded.hook_records = records
    loaded.latencies = session_latencies(records, span)
    loaded.hook_sessions = [r for r in records if r.get("event") == "session"]
    if not loaded.context.ort_version and loaded.latencies:
        loaded.context.ort_version = loaded.latencies[0].ort_version
    hello = next((r for r in records if r.get("event") == "hello" and "mono" in r and "unix" in r), None)
    if hello is not None:
        loaded.profile.unix_minus_mono = hello["unix"] - hello["mono"]
    loaded.profile.runs = [RunSpan(latency.session, tid, start, ms / 1000)
                           for latency in loaded.latencies
                           for start, ms, tid in zip(latency.starts, latency.durations_ms, latency.run_tids)]


def caller_tids(loaded) -> set:
    """Threads that called run() in the window."""
    return set().union(*(latency.caller_tids for latency in loaded.latencies)) if loaded.latencies else set()


def report(loaded, report, top):
    report.sessions = [SessionSummary(**latency.summary(loaded.window_seconds)) for latency in loaded.latencies]


def missing_reason(loaded, report) -> Optional[str]:
    from .capi import CapiRecord
    from .pybind import PybindRecord
    if report.sessions:
        return None
    hook = loaded.manifest.section("hook", HookSummary)
    pybind = loaded.manifest.section("pybind", PybindRecord)
    if pybind is not None and pybind.instead_of_attach is not None and pybind.not_timed is None:
        return (f"no run() was seen in the window by the uprobes on the pybind11 dispatchers "
                f"({pybind.instead_of_attach}; {pybind.calls} dispatcher call(s) seen)")
    if hook is not None and hook.attach not in (None, "attached", "hooked"):
        why_not_probes = (f"; the pybind11 dispatchers could not be probed: {pybind.not_timed}"
                          if pybind is not None and pybind.not_timed else "")
        return f"run() was not timed: the hook's recording was not attached ({hook.attach}){why_not_probes}"
    capi = loaded.manifest.section("capi", CapiRecord)
    why_not_capi = f"; C API calls: {capi.not_timed}" if capi is not None and capi.not_timed else ""
    return ("no run() was timed in the window (neither the startup hook, an attach to the process, nor "
            "probes on ORT's C API saw one)" + why_not_capi)


SIGNAL = Signal(name="runs", description="sessions, options and per-run latency from the injected startup hook",
                sections={"hook": HookSummary}, files=(HOOK_DIR,), load=load, report=report,
                report_sections=("sessions",), missing=missing_reason, capture=HookCapture)
