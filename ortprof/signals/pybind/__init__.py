"""Python run() timing of a process ortprof did not launch, with no code injected: uprobes on
the pybind11 dispatchers of InferenceSession's run methods in ORT's Python module.

dispatch.py finds the dispatchers (pybind11's function records read from the process's
memory, records.py; their exits from the module's code, code.py); timing.py adds the probes,
records them with perf and turns the events into run spans; sessions.py turns the spans into
the startup hook's records, which the runs signal loads like a hooked workload's; capture.py is
what `record --pid` drives when the hook's recording is not attached (refused, or --no-attach).
docs/pybind.md says how and what the spans include.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..base import Signal

PYBIND_DATA = "pybind.data"
PYBIND_LOG = "pybind.log"


@dataclass
class PybindRecord:
    """run.json "pybind": the dispatchers whose runs were timed by uprobes, and what they saw."""
    instead_of_attach: Optional[str] = None   # why probes and not the hook's attach (--no-attach, its refusal)
    module: Optional[str] = None         # the onnxruntime_pybind11_state file probed, as the process maps it
    ort_version: Optional[str] = None
    build_id: Optional[str] = None
    layout: Optional[str] = None         # pybind11's function record layout (docs/pybind.md)
    methods: List[str] = field(default_factory=list)   # the InferenceSession methods probed
    find_seconds: Optional[float] = None  # finding the dispatchers (a cached build-id: a few ms)
    calls: int = 0                       # dispatcher calls seen
    runs: int = 0                        # timed: returned run(), run_with_iobinding() ...
    sessions: int = 0
    untimed: Dict[str, int] = field(default_factory=dict)   # calls not timed, by why (raised, run_async ...)
    not_timed: Optional[str] = None      # why there were no probes


def __getattr__(name):
    # The finder pulls the ELF readers' module chain: imported when asked for, not with the registry.
    if name in ("DispatchSite", "DispatchSites", "find_run_dispatchers"):
        from . import dispatch
        return getattr(dispatch, name)
    raise AttributeError(name)


def capture(recorder):
    """Only for --pid: a launched Python workload has the startup hook."""
    if recorder.options.pid is None:
        return None
    from .capture import PybindCapture
    return PybindCapture(recorder, recorder.chosen.get("perf"))


SIGNAL = Signal(name="pybind", description="Python run() latency by uprobes on the pybind11 dispatchers "
                "(record --pid without injection)",
                sections={"pybind": PybindRecord}, files=(PYBIND_DATA, PYBIND_LOG), checks=("uprobes",),
                capture=capture)

__all__ = ["PYBIND_DATA", "PYBIND_LOG", "PybindRecord", "SIGNAL"]
