"""The futex counters a run's bpftrace program printed (recording.futex_bpf).

bpftrace -f json writes one object a line; the maps are cumulative and printed
every second and at exit, so the last print of each map is the most complete.
"""
import json
from dataclasses import dataclass, field
from typing import Dict, Optional

from ..errors import InputError
from .futex import FutexThreadStats

WAIT_KIND = "1"


@dataclass
class FutexCounts:
    threads: Dict[int, FutexThreadStats] = field(default_factory=dict)
    window_open_ns: Optional[int] = None
    window_close_ns: Optional[int] = None
    complete: bool = False        # bpftrace reached END and printed its final maps
    in_flight: int = 0            # calls still blocked when bpftrace stopped (their time up to the close is added)

    @property
    def wait_seconds(self):
        return sum(stats.wait_seconds for stats in self.threads.values())


def _latest_maps(lines):
    maps, complete = {}, False
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue    # a line cut short by a killed bpftrace
        if record.get("type") == "map":
            maps.update(record.get("data") or {})
        elif record.get("type") == "printf" and "ortprof-futex-end" in str(record.get("data")):
            complete = True
    return maps, complete


def _split_key(key):
    tid, _, kind = str(key).partition(",")
    return int(tid), kind.strip()


def read_futex_counts(lines):
    """FutexCounts from the lines of futex-bpf.jsonl."""
    maps, complete = _latest_maps(lines)
    counts = FutexCounts(complete=complete)
    counts.window_open_ns = maps.get("@window_open_ns") or None
    counts.window_close_ns = maps.get("@window_close_ns") or None
    if counts.window_open_ns is None:
        return counts     # the window never opened: nothing was counted
    threads = counts.threads
    for key, value in (maps.get("@calls") or {}).items():
        tid, kind = _split_key(key)
        stats = threads.setdefault(tid, FutexThreadStats())
        stats.calls += value
        if kind == WAIT_KIND:
            stats.waits += value
        else:
            stats.wakes += value
    for key, value in (maps.get("@ns") or {}).items():
        tid, kind = _split_key(key)
        stats = threads.setdefault(tid, FutexThreadStats())
        stats.seconds += value / 1e9
        if kind == WAIT_KIND:
            stats.wait_seconds += value / 1e9
    # Calls blocked when bpftrace stopped (printed at exit only): their time up to the close.
    close = counts.window_close_ns
    kinds = maps.get("@kind")     # runs recorded before the kind was packed into @start's value
    for key, entered in (maps.get("@start") or {}).items():
        tid = int(key)
        start, kind = (entered >> 1, str(entered & 1)) if kinds is None else (entered, str(kinds.get(key)))
        if close is None or start >= close:
            continue
        blocked = (close - max(start, counts.window_open_ns)) / 1e9
        stats = threads.setdefault(tid, FutexThreadStats())
        stats.seconds += blocked
        if kind == WAIT_KIND:
            stats.wait_seconds += blocked
        counts.in_flight += 1
    return counts


def load_futex_counts(path):
    try:
        with open(path, errors="replace") as stream:
            return read_futex_counts(stream)
    except OSError as error:
        raise InputError(f"{path}: cannot read the futex counters ({error.strerror})")
