"""Python run() timing of a process ortprof did not launch, with no code injected: uprobes on
the pybind11 dispatchers of InferenceSession's run methods in ORT's Python module.

dispatch.py finds the dispatchers (pybind11's function records read from the process's
memory, records.py; their exits from the module's code, code.py); timing.py adds the probes,
records them with perf and turns the events into run spans. docs/pybind.md says how and what
the spans include.
"""
from .dispatch import DispatchSite, DispatchSites, find_run_dispatchers

__all__ = ["DispatchSite", "DispatchSites", "find_run_dispatchers"]
