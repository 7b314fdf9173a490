"""The process's cgroup: its CPU limit and throttling counters before and after the window."""
from dataclasses import dataclass
from typing import Any, Dict, Optional

from .base import Signal


@dataclass
class CgroupRecord:
    """run.json "cgroup": the limit and cpu.stat snapshots (None where unreadable, with `error`)."""
    limit: Optional[Dict[str, Any]] = None         # {"cpus", "source", ...}
    stat_before: Optional[Dict[str, Any]] = None   # cpu.stat: nr_periods, nr_throttled, throttled_usec
    stat_after: Optional[Dict[str, Any]] = None
    group_final: Optional[Dict[str, Any]] = None   # the --cpus group's cpu.stat when it was removed
    error: Optional[str] = None


SIGNAL = Signal(name="cgroup", description="CPU quota and throttling of the process's cgroup (v1 and v2)",
                sections={"cgroup": CgroupRecord})
