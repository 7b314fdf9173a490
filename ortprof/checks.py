"""The one shape of a machine check, shared by `doctor`, `record`'s refusals and `build`'s preflight.

A check says what was found (`detail`, one line) and, when it is not ok, the
exact command or action that fixes it (`fix`). Status words are the same
everywhere, in the terminal and in JSON: ok, warning, fail.
"""
from dataclasses import asdict, dataclass, field
from typing import Tuple

OK, WARNING, FAIL = "ok", "warning", "fail"
STATUSES = (OK, WARNING, FAIL)


@dataclass
class Check:
    id: str                     # stable, kebab-case: "perf-permission", "build-cmake"
    status: str                 # one of STATUSES
    detail: str                 # one line
    fix: str = ""               # the exact command or action; empty when ok
    apt: Tuple[str, ...] = field(default=())   # Debian packages that provide what is missing

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown check status {self.status!r}")

    @property
    def failed(self):
        return self.status == FAIL

    def to_json(self):
        data = asdict(self)
        data["apt"] = list(self.apt)
        return data


def failures(checks):
    return [check for check in checks if check.status == FAIL]
