"""ORT's run() calls: sessions, their options and each run's span, from the startup hook."""
from dataclasses import dataclass
from typing import List, Optional

from .base import Capture, Signal

HOOK_DIR = "hook"


@dataclass
class HookSummary:
    """run.json "hook": where the hook's records are and how many it wrote."""
    dir: Optional[str] = None
    sessions: int = 0
    runs: int = 0


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


class HookCapture(Capture):
    """The startup hook, injected into a launched Python workload through its environment:
    it writes each session's options and every run()'s span into hook/."""

    def workload_environment(self, env):
        from ..hook import hook_environment
        options = self.recorder.options
        return hook_environment(env, self.recorder.run.file(HOOK_DIR), options.warmup_runs,
                                options.session_overrides, options.extra_python_paths, options.ort_profile)

    def finish(self):
        from ..hook import read_hook_records
        summary = HookSummary(dir=HOOK_DIR)
        for record in read_hook_records(self.recorder.run.file(HOOK_DIR)):
            if record.get("event") == "session":
                summary.sessions += 1
            elif record.get("event") == "runs":
                summary.runs += len(record.get("runs", ()))
        self.recorder.manifest.set_section("hook", summary)


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
    if report.sessions:
        return None
    capi = loaded.manifest.section("capi", CapiRecord)
    why_not_capi = f"; C API calls: {capi.not_timed}" if capi is not None and capi.not_timed else ""
    return ("no run() records from the startup hook (a workload that is not Python, or --pid without the hook)"
            + why_not_capi)


SIGNAL = Signal(name="runs", description="sessions, options and per-run latency from the injected startup hook",
                sections={"hook": HookSummary}, files=(HOOK_DIR,), load=load, report=report,
                report_sections=("sessions",), missing=missing_reason, capture=HookCapture)
