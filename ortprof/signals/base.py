"""What a signal is: one source of evidence, from the machine check to the report section.

A signal module defines `SIGNAL`, a `Signal` naming what it owns: the checks
`doctor` and `record` ask of the machine, its files in the run directory, its
sections of run.json (dataclasses), how it loads into a LoadedRun (the Profile,
the per-thread timeline, the run() spans), and how it fills its report section.
`ortprof.signals.SIGNALS` lists them in load order.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple


@dataclass(frozen=True)
class Signal:
    name: str                                   # "samples", "futex", "runs", ...
    description: str                            # one line, for docs and `doctor`
    sections: Dict[str, type] = field(default_factory=dict)    # run.json key -> dataclass
    files: Tuple[str, ...] = ()                 # run-directory files it writes
    checks: Tuple[str, ...] = ()                # doctor check ids it needs when recording
    load: Optional[Callable[[Any, Any], None]] = None      # (RunDirectory, LoadedRun) -> None
    report: Optional[Callable[[Any, Any], None]] = None    # (LoadedRun, Report) -> None
