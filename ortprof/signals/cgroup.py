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


@dataclass
class CgroupSection:
    quota_cpus: Optional[float] = None
    throttled_periods: Optional[int] = None
    throttled_ms: Optional[float] = None
    periods: Optional[int] = None


def cgroup_section(record: CgroupRecord) -> CgroupSection:
    """Throttling during the window: the difference of the two cpu.stat snapshots."""
    before, after = record.stat_before or {}, record.stat_after or {}
    section = CgroupSection(quota_cpus=(record.limit or {}).get("cpus"))
    if after.get("nr_throttled") is not None and before.get("nr_throttled") is not None:
        section.throttled_periods = after["nr_throttled"] - before["nr_throttled"]
        section.throttled_ms = round((after.get("throttled_usec", 0) - before.get("throttled_usec", 0)) / 1000, 1)
        if after.get("nr_periods") is not None and before.get("nr_periods") is not None:
            section.periods = after["nr_periods"] - before["nr_periods"]
    return section


def report(loaded, report, top):
    report.cgroup = cgroup_section(loaded.manifest.section("cgroup", CgroupRecord) or CgroupRecord())


SIGNAL = Signal(name="cgroup", description="CPU quota and throttling of the process's cgroup (v1 and v2)",
                sections={"cgroup": CgroupRecord}, report=report)
