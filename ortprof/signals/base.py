"""What a signal is: one source of evidence, from the machine check to the report section.

A signal module defines `SIGNAL`, a `Signal` naming what it owns: the checks
`doctor` and `record` ask of the machine, its files in the run directory, its
sections of run.json (dataclasses), how it loads into a LoadedRun (the Profile,
the per-thread timeline, the run() spans), how it fills its report section, and
why that section is empty when the run lacks it. Its report section's type is
defined in the signal's module; ortprof.model.report.Report composes them.

Signal modules import ortprof.analysis lazily (inside functions): the model
imports the signals' section types, and the analysis imports the model.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple


@dataclass(frozen=True)
class Signal:
    name: str                                   # "samples", "futex", "runs", ...
    description: str                            # one line, for docs and run.schema.json
    sections: Dict[str, type] = field(default_factory=dict)    # run.json key -> dataclass
    files: Tuple[str, ...] = ()                 # run-directory files it writes
    checks: Tuple[str, ...] = ()                # doctor check ids it needs when recording
    load: Optional[Callable[[Any, Any], None]] = None         # (RunDirectory, LoadedRun) -> None
    report: Optional[Callable[[Any, Any, int], None]] = None  # (LoadedRun, Report, top) -> None
    report_sections: Tuple[str, ...] = ()       # report keys it fills (empty_sections names)
    missing: Optional[Callable[[Any, Any], Optional[str]]] = None   # (LoadedRun, Report) -> why they are empty
