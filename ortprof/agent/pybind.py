"""Python processes the agent follows without the startup hook: run() timed by uprobes on the
pybind11 dispatchers of InferenceSession's run methods (ortprof.signals.pybind), nothing injected.

The wheel's onnxruntime_pybind11_state module links ORT in statically, so a Python process's
runs never reach libonnxruntime.so's C API. uprobes.AgentUprobes finds the dispatchers once per
module file (the process's memory read once per build-id, then the pybind cache) and puts an
entry probe and a probe on each `ret` in the agent's probe group; the process's long-lived perf
records their events with its samples, on in windows, off between them. Each window's capture
(captures.WindowPybindCapture) pairs the window's events into run spans and turns them into the
runs signal's `session` and `runs` records (signals.pybind.sessions.hook_records): the window's
report has the sessions and their latency, the histogram the window's runs.

A session is its pybind object (`self`, id(session._sess) in the process), the same handle an
attach or the startup hook writes: nothing is read from it, so its model and options are
unknown (`options_known: false`, labels `unknown@0x...`, model and options "unknown").
"""
from dataclasses import dataclass, field
from typing import Dict, List

from .uprobes import ProbedFile

HANDLES_LIMIT = 4096     # session numbers remembered per process (a freed session is never seen going)


@dataclass
class PythonProcess:
    """What the agent knows of one followed Python process across its windows."""
    probed: ProbedFile
    numbers: Dict[int, int] = field(default_factory=dict)    # `self` id -> session number, kept across windows

    def window_records(self, spans, pid: int) -> List[dict]:
        from ..signals.pybind.sessions import hook_records
        sites = self.probed.sites
        records = hook_records(spans, pid, self.probed.ort_version, sites.module_in_process if sites else None,
                               numbers=self.numbers)
        for handle in list(self.numbers)[:max(0, len(self.numbers) - HANDLES_LIMIT)]:
            del self.numbers[handle]      # the oldest first; numbers already given are not reused
        return records

    def spans(self, perf: str, data: str, scratch: str, pid: int, timeout: float):
        """The run spans of the window's perf.data (its dispatcher events; the samples skipped).
        Raises OSError or subprocess.TimeoutExpired when perf cannot be run."""
        from ..signals.capi.spans import script_lines
        from ..signals.pybind.timing import dispatch_events, pair_runs
        lines = script_lines(perf, [data], scratch, timeout=timeout, with_samples=True)
        return [span for span in pair_runs(dispatch_events(lines, self.probed.event_tag), self.probed.sites.layout)
                if span.pid in (None, pid)]

