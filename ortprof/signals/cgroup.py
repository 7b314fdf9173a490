"""The process's cgroup: its CPU limit and throttling counters before and after the window."""
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from .base import Capture, Signal


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


class CgroupCapture(Capture):
    """The cgroup's CPU limit and cpu.stat at the window's start and end; with `cpus` (record's
    --cpus), a CPU-limited group created for the launched workload and removed at the end."""

    def __init__(self, recorder, cpus=None):
        super().__init__(recorder)
        self.cpus = cpus
        self.group = None          # the --cpus LimitedCgroup
        self.group_dir = None      # the process's group: its path outlives the process
        self.pid = None

    def before_workload(self):
        from ..cgroup import LimitedCgroup
        if self.cpus is None:
            return
        self.group = LimitedCgroup(self.cpus, name=f"ortprof-{os.getpid()}")
        self.group.__enter__()
        self.recorder.manifest.cgroup_created = self.group.describe()

    def workload_preexec(self):
        return self.group.add_self if self.group is not None else None

    def start(self, pid):
        self.pid = pid
        self.recorder.manifest.set_section("cgroup", self.snapshot(pid, "before"))

    def window_closing(self):
        record = self.recorder.manifest.section("cgroup", CgroupRecord)
        after = self.snapshot(self.pid, "after")
        record.stat_after, record.error = after.stat_after, after.error or record.error

    def finish(self):
        if self.group is None:
            return
        record = self.recorder.manifest.section("cgroup", CgroupRecord) or CgroupRecord()
        record.group_final = self.group.stat()
        self.recorder.manifest.set_section("cgroup", record)
        self.group.__exit__(None, None, None)

    def snapshot(self, pid, when) -> CgroupRecord:
        """The limit ("before" only) and cpu.stat now, as stat_<when>."""
        from ..cgroup import cpu_stat, process_cgroup_dir, process_cpu_limit
        from ..errors import OrtprofError
        record, stat = CgroupRecord(), None
        try:
            if self.group is not None:
                stat = self.group.stat()
                record.limit = {"cpus": self.cpus, "source": "ortprof --cpus"}
            elif pid:
                if when == "before":
                    self.group_dir = process_cgroup_dir(pid)
                    record.limit = process_cpu_limit(pid)
                stat = cpu_stat(self.group_dir or pid)
        except OrtprofError as error:
            record.error = str(error)
        except OSError:
            pass
        setattr(record, f"stat_{when}", stat)
        return record


def capture(recorder):
    """record's: a --cpus group only for a workload it launches."""
    options = recorder.options
    return CgroupCapture(recorder, options.cpus if options.pid is None else None)


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
                sections={"cgroup": CgroupRecord}, report=report, capture=capture)
