"""ORT's own profile (SessionOptions.enable_profiling) -> node runs on perf's clock.

The file is a Chrome-trace JSON array written by `end_profiling()`, one event
per line: `<node>_kernel_time` events (cat "Node") carry the op type, provider,
the kernel TID of the thread that ran the node and, on ORT >= 1.11 with a
pool, `thread_scheduling_stats` (per parallel section: how many runs each
pool worker took). `ts` counts microseconds from the session's profiling
start, `get_profiling_start_time_ns()`, which is std::chrono's
high_resolution_clock: the system clock in libstdc++ (measured on 1.15.1 and
1.31.1; the hook tells it from CLOCK_MONOTONIC by which one it is near). The
hook records that start and a tight (unix, monotonic) pair right after the
session is created, so a node's start in CLOCK_MONOTONIC seconds is
(start_unix_ns + ts * 1000 - unix_minus_mono_ns) / 1e9.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional

from ..errors import InputError

KERNEL_SUFFIX = "_kernel_time"


class NodeEvent(NamedTuple):
    """One node run as ORT wrote it (times in microseconds from the profiling start)."""
    node: str
    op: str
    provider: str
    tid: int
    ts_us: int
    dur_us: int
    sections: Optional[int]       # parallel sections it opened (len(block_size)); None: no scheduling stats
    workers: Optional[int]        # pool workers that ran a task since the previous node
    section_us: Optional[int]     # caller's Distribution+Run+Wait time in those sections


class OrtTrace(NamedTuple):
    nodes: List[NodeEvent]
    model_runs: List[tuple]       # (tid, ts_us, dur_us)
    truncated: bool               # the file ended early; what could be read is kept


def _stats(args):
    stats = args.get("thread_scheduling_stats")
    if isinstance(stats, str):      # "" when the session has no pool
        try:
            stats = json.loads(stats) if stats else None
        except ValueError:
            stats = None
    return stats if isinstance(stats, dict) else None


class _WorkerRuns:
    """Pool workers that took part in each node. ORT's per-worker `num_run` counts all tasks a
    worker ran since profiling started, so a node's workers are those whose count grew."""

    def __init__(self):
        self.last = {}               # (pool, worker thread id) -> num_run

    def node(self, stats):
        """(sections, workers, caller's section us) of one node's stats."""
        if stats is None:
            return None, None, None
        main = stats.get("main_thread") or {}
        pool = main.get("thread_pool_name")
        sections = len(main.get("block_size") or ())
        workers = 0
        for worker, sub in (stats.get("sub_threads") or {}).items():
            runs = (sub.get("num_run") or 0) if isinstance(sub, dict) else 0
            key = (pool, worker)
            if runs > self.last.get(key, 0) and sections:
                workers += 1
            self.last[key] = runs
        section_us = sum(int(main.get(key) or 0) for key in ("Distribution", "Run", "Wait"))
        return sections, workers, section_us


def _events(path):
    """(events, truncated). A file cut short (killed mid-write) is read line by line."""
    try:
        with open(path) as stream:
            text = stream.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ORT's profile ({exc.strerror or exc})")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not an ORT profile (not text)")
    try:
        events = json.loads(text)
        truncated = False
    except ValueError:
        events, truncated = [], True
        for line in text.splitlines():
            line = line.strip().rstrip(",")
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        if not events:
            raise InputError(f"{path}: not an ORT profile (no JSON trace events)")
    if not isinstance(events, list) or (events and not isinstance(events[0], dict)):
        raise InputError(f"{path}: not an ORT profile (expected a JSON array of trace events)")
    return events, truncated


def parse_ort_profile(path):
    """OrtTrace of one profile file written by ORT."""
    events, truncated = _events(path)
    nodes, runs, kernels = [], [], []
    for event in events:
        if not isinstance(event, dict):
            continue
        name = event.get("name") or ""
        try:
            tid, ts, dur = int(event.get("tid", 0)), int(event["ts"]), int(event["dur"])
        except (KeyError, TypeError, ValueError):
            continue
        if event.get("cat") == "Node" and name.endswith(KERNEL_SUFFIX):
            kernels.append((ts, tid, dur, name, event.get("args") or {}))
        elif event.get("cat") == "Session" and name == "model_run":
            runs.append((tid, ts, dur))
    worker_runs = _WorkerRuns()
    for ts, tid, dur, name, args in sorted(kernels, key=lambda kernel: (kernel[0] + kernel[2], kernel[0])):
        # in end order: a node's stats are written when it ends
        sections, workers, section_us = worker_runs.node(_stats(args))
        nodes.append(NodeEvent(name[:-len(KERNEL_SUFFIX)], args.get("op_name") or "?",
                               args.get("provider") or "?", tid, ts, dur, sections, workers, section_us))
    if not nodes and not runs and not any(isinstance(e, dict) and "ph" in e for e in events):
        raise InputError(f"{path}: not an ORT profile (no trace events with ph/ts/dur)")
    return OrtTrace(nodes, runs, truncated)


class NodeRun(NamedTuple):
    """A node run on perf's clock (CLOCK_MONOTONIC seconds)."""
    session: int
    node: str
    op: str
    provider: str
    tid: int
    start: float
    seconds: float
    sections: Optional[int]
    workers: Optional[int]
    section_us: Optional[int]

    @property
    def end(self):
        return self.start + self.seconds


@dataclass
class OrtProfileData:
    """Every profiled session's node runs in the window, on perf's clock."""
    nodes: List[NodeRun] = field(default_factory=list)          # sorted by start
    model_runs: List[tuple] = field(default_factory=list)       # (session, tid, start mono s, seconds)
    files: Dict[int, str] = field(default_factory=dict)         # session -> profile file
    notes: List[str] = field(default_factory=list)


def _profile_file(record, hook_dir):
    """The file the hook reported, or the same name in this run's hook directory (a moved run)."""
    path = record.get("file")
    if not path:
        return None
    if os.path.exists(path):
        return path
    local = os.path.join(str(hook_dir), os.path.basename(path))
    return local if os.path.exists(local) else None


def load_ort_profiles(records, hook_dir, window=None):
    """OrtProfileData of the sessions the hook profiled (None when no session was)."""
    sessions = {(r.get("pid"), r["session"]): r for r in records
                if r.get("event") == "session" and isinstance(r.get("ort_profile"), dict)}
    if not sessions:
        return None
    data = OrtProfileData()
    ends = {(r.get("pid"), r.get("session")): r for r in records if r.get("event") == "ort_profile_end"}
    low, high = window or (float("-inf"), float("inf"))
    for key, session in sorted(sessions.items(), key=lambda item: item[1]["session"]):
        clock = session["ort_profile"]
        end = ends.get(key)
        path = _profile_file(end, hook_dir) if end else None
        if "start_unix_ns" not in clock or path is None:
            why = clock.get("error") or (end or {}).get("error") or "its profile file was never written or is gone"
            data.notes.append(f"session {session['session']}: no ORT profile ({why})")
            continue
        try:
            trace = parse_ort_profile(path)
        except InputError as error:
            data.notes.append(f"session {session['session']}: {error}")
            continue
        if trace.truncated:
            data.notes.append(f"session {session['session']}: ORT's profile {path} was cut short; read what it has")
        data.files[session["session"]] = path
        # the hook says which clock ORT's start is on (the system clock on 1.15.1 and 1.31.1)
        offset_ns = clock["unix_minus_mono_ns"] if clock.get("clock", "system") == "system" else 0
        origin = (clock["start_unix_ns"] - offset_ns) / 1e9
        number = session["session"]
        for node in trace.nodes:
            start = origin + node.ts_us / 1e6
            if low <= start <= high:
                data.nodes.append(NodeRun(number, node.node, node.op, node.provider, node.tid, start,
                                          node.dur_us / 1e6, node.sections, node.workers, node.section_us))
        for tid, ts, dur in trace.model_runs:
            start = origin + ts / 1e6
            if low <= start <= high:
                data.model_runs.append((number, tid, start, dur / 1e6))
    data.nodes.sort(key=lambda node: node.start)
    return data
