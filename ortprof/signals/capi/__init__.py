"""Calls into ONNX Runtime's C API, seen by uprobes: every non-Python client (C, C++, C#,
Java, Node, Rust, onnxruntime_perf_test) reaches ORT through the OrtApi table of
libonnxruntime.so, whose functions ortprof.symbols.ortapi locates in the file.

probes.py adds and removes the uprobes (perf probe), owned by the ortprof process that
added them; spans.py turns the recorded entry and return events into calls with durations;
sessions.py turns the calls into the startup hook's records (sessions, options, run() spans),
which the runs signal loads like a Python workload's; capture.py is what `record` drives.
"""
from dataclasses import dataclass
from typing import Optional

from ..base import Signal

# The perf data and log of the probes' events (capture.py); a later library gets capi-2.data ...
CAPI_DATA = "capi.data"
CAPI_LOG = "capi.log"


@dataclass
class CapiRecord:
    """run.json "capi": the library whose C API calls were timed, and what the probes saw."""
    library: Optional[str] = None        # the libonnxruntime.so probed (None: none)
    ort_version: Optional[str] = None
    api_version: Optional[int] = None    # the highest OrtApi version it serves
    build_id: Optional[str] = None
    calls: int = 0                       # C API calls seen
    runs: int = 0                        # timed Run / RunWithBinding calls
    sessions: int = 0
    not_timed: Optional[str] = None      # why there were no probes


def capture(recorder):
    """Only where perf is usable and as root: perf probe writes tracefs' uprobe_events
    (`ortprof doctor --check uprobes`)."""
    import os
    from .capture import CapiCapture
    perf = recorder.chosen.get("perf")
    return CapiCapture(recorder, perf) if perf and os.geteuid() == 0 else None


SIGNAL = Signal(name="capi", description="ORT C API calls of non-Python clients (Run, sessions, options) by uprobes",
                sections={"capi": CapiRecord}, files=(CAPI_DATA, CAPI_LOG), checks=("uprobes",), capture=capture)
