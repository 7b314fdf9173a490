"""Sources of evidence, one module each (see base.Signal).

SIGNALS is the registry, in load order: the samples build the Profile the
others add to (futex counts, run() spans, /proc CPU series); ort_profile reads
the hook records the runs signal loaded (the capi signal writes its calls as such records
while recording). REPORT_ORDER is the order their report
sections are filled in: ORT's profile labels stripped frames before the samples'
hot paths show them, and the futex table takes each thread's role from the
samples' thread table.
"""
from . import capi, cgroup, futex, ort_profile, pybind, pyspy, runs, samples, sched, threads
from .base import Signal

SIGNALS = (samples.SIGNAL, futex.SIGNAL, runs.SIGNAL, capi.SIGNAL, pybind.SIGNAL, sched.SIGNAL, ort_profile.SIGNAL,
           threads.SIGNAL, pyspy.SIGNAL, cgroup.SIGNAL)
REPORT_ORDER = ("runs", "sched", "cgroup", "ort_profile", "samples", "futex", "pyspy")
BY_NAME = {signal.name: signal for signal in SIGNALS}


def manifest_section_types():
    """run.json key -> the dataclass of the signal that owns it."""
    return {key: section_type for signal in SIGNALS for key, section_type in signal.sections.items()}


def reporting_signals():
    """The signals that fill report sections, in REPORT_ORDER."""
    return [BY_NAME[name] for name in REPORT_ORDER]


__all__ = ["BY_NAME", "REPORT_ORDER", "SIGNALS", "Signal", "manifest_section_types", "reporting_signals"]
