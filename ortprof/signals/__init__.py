"""Sources of evidence, one module each (see base.Signal).

SIGNALS is the registry: `record`, the agent and the report ask it what to
check, which run.json sections exist, and what to load.
"""
from . import cgroup, futex, runs, threads
from .base import Signal

SIGNALS = (runs.SIGNAL, threads.SIGNAL, futex.SIGNAL, cgroup.SIGNAL)


def manifest_section_keys():
    """run.json keys owned by signals."""
    return {key for signal in SIGNALS for key in signal.sections}


__all__ = ["SIGNALS", "Signal", "manifest_section_keys"]
