"""RunManifest: a typed view of a run directory's run.json (schema ortprof.run/1).

run.json is written by the recorder as the run progresses and may come from an
interrupted run, so every field but the command is optional here. `raw` keeps
the whole document for fields this view does not name.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple


@dataclass
class RunManifest:
    raw: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, document):
        return cls(dict(document or {}))

    def _section(self, name):
        return self.raw.get(name) or {}

    @property
    def command(self) -> Optional[list]:
        return self.raw.get("command")

    @property
    def status(self) -> Optional[str]:
        return self.raw.get("status")

    @property
    def notes(self) -> List[str]:
        return list(self.raw.get("notes") or [])

    @property
    def window(self) -> Optional[Tuple[float, float]]:
        """(start, end) CLOCK_MONOTONIC seconds of the profiling window, when it closed."""
        window = self._section("window")
        if "start_mono" in window and "end_mono" in window:
            return (window["start_mono"], window["end_mono"])
        return None

    @property
    def window_seconds(self) -> Optional[float]:
        return self._section("window").get("seconds")

    @property
    def environment(self) -> dict:
        return self._section("environment")

    @property
    def ort(self) -> dict:
        return self.environment.get("ort") or {}

    @property
    def ort_module(self) -> Optional[str]:
        return self.ort.get("native_module") or self.ort.get("path")

    @property
    def build_config(self) -> Optional[str]:
        return self._section("ort_build").get("config")

    @property
    def usable_cores(self) -> Optional[int]:
        environment = self.environment
        return len(environment.get("affinity") or []) or (environment.get("cpu") or {}).get("logical_cores")

    @property
    def cgroup(self) -> dict:
        return self._section("cgroup")

    @property
    def futex_probe(self) -> dict:
        """{"usable", "reason", "fix"} from record's futex probe; {} for older runs."""
        return self._section("futex_probe")

    @property
    def pyspy_rate_hz(self) -> Optional[float]:
        """py-spy's sampling rate, from the command line the recorder ran."""
        argv = (self._section("profilers").get("py-spy") or {}).get("command") or []
        for flag, value in zip(argv, argv[1:]):
            if flag == "--rate":
                return float(value)
        return None

    @property
    def thread_names(self) -> dict:
        return {int(tid): name for tid, name in (self._section("threads").get("names") or {}).items()}
