"""The futex counters a run's bpftrace program printed (bpf.py).

bpftrace -f json writes one object a line; the maps are cumulative and printed
every second and at exit, so the last print of each map is the most complete.
Runs recorded before the program counted calls at their exit have @calls and @ns
(counted at entry) and @kind beside an unpacked @start: both are read.
"""
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ...errors import InputError
from .accumulator import FutexThreadStats

WAIT_KIND = "1"


@dataclass
class FutexCounts:
    threads: Dict[int, FutexThreadStats] = field(default_factory=dict)
    window_open_ns: Optional[int] = None
    window_close_ns: Optional[int] = None
    complete: bool = False        # bpftrace reached END and printed its final maps
    in_flight: int = 0            # calls entered in the window and still blocked at its close (their time up to it is added)

    @property
    def wait_seconds(self):
        return sum(stats.wait_seconds for stats in self.threads.values())


def json_records(lines):
    """The JSON objects of bpftrace -f json output (other lines, and a line cut short by a
    killed bpftrace, skipped)."""
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            yield json.loads(line)
        except ValueError:
            continue


def _latest_maps(lines):
    maps: Dict[str, Any] = {}     # map name -> its last print
    complete = False
    for record in json_records(lines):
        if record.get("type") in ("map", "stats"):
            maps.update(record.get("data") or {})
        elif record.get("type") == "printf" and "ortprof-futex-end" in str(record.get("data")):
            complete = True
    return maps, complete


def _split_key(key) -> Tuple[int, str]:
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

    def add(tid, kind, calls=0, nanoseconds=0):
        stats = threads.setdefault(tid, FutexThreadStats())
        stats.calls += calls
        stats.seconds += nanoseconds / 1e9
        if kind == WAIT_KIND:
            stats.waits += calls
            stats.wait_seconds += nanoseconds / 1e9
        else:
            stats.wakes += calls

    for key, value in (maps.get("@t") or {}).items():       # calls that entered inside the window
        add(*_split_key(key), calls=value["count"], nanoseconds=value["total"])
    for key, value in (maps.get("@before") or {}).items():  # time inside the window of calls entered before
        add(*_split_key(key), nanoseconds=value)
    for key, value in (maps.get("@calls") or {}).items():   # older runs
        add(*_split_key(key), calls=value)
    for key, value in (maps.get("@ns") or {}).items():
        add(*_split_key(key), nanoseconds=value)
    # Calls blocked when the window closed (printed at exit only): their time up to
    # the close, and the call itself when it entered inside the window. A thread
    # blocked from before the open to after the close made no call in the window:
    # it is idle, not futex overhead, and left out (as perf's per-call method does).
    close, open_ = counts.window_close_ns, counts.window_open_ns
    kinds = maps.get("@kind")
    for key, entered in (maps.get("@start") or {}).items():
        if kinds is None:
            start, kind = entered >> 2, str(entered & 1)
        else:
            start, kind = entered, str(kinds.get(key))
        if close is None or start >= close or start < open_:
            continue
        calls = 1 if kinds is None else 0   # older runs counted it at entry
        add(int(key), kind, calls=calls, nanoseconds=close - max(start, open_))
        counts.in_flight += 1
    return counts


def load_futex_counts(path):
    try:
        with open(path, errors="replace") as stream:
            return read_futex_counts(stream)
    except OSError as error:
        raise InputError(f"{path}: cannot read the futex counters ({error.strerror})")
