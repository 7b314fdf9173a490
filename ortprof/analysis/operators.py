"""Hot operators: ORT's per-node profile joined with the CPU samples.

Every sample of a thread that runs a profiled session is attributed to the
node running at that moment: on the thread that ran the node (the caller in
sequential execution, an inter-op worker in parallel execution) by the node's
own span; on an intra-op worker by the spans of its session's nodes (workers
serve the parallel sections of whichever node is running). A sample between
nodes of one run() is put "after" the node that ended last (for up to
AFTER_LIMIT_S): that is where a pool's spin-wait and blocking sync happen;
spin and sync after the run's last node, while the session waits for the next
request, are counted apart (between_runs_spin_sync_pct). Stripped functions
(ort!fn_...) then get a label from the op types whose runs they were sampled
in, set on the Profile's frames so every exporter shows it.
"""
import re
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from statistics import median
from typing import DefaultDict, Dict, Set, Tuple

from ..model.report import PoolWorker
from ..signals.ort_profile import ClockAlignment, FrameOps, OperatorRow, OperatorsSection, ParallelSections
from . import roles as roles_mod
from .pipeline import stack_category
from .stacks import ORT

# A parallel section shorter than this (as ORT's profile times it, under the pool) costs
# more to hand to a sleeping worker (futex wake, split, join) than it saves: measured on
# 2 cores with MatMul chains of growing size, 1 vs 2 threads, spinning off: 2 threads were
# slower up to 33 us sections (0.68-0.93x), faster from 42 us (1.12x). With spinning on they
# gain below that only by keeping a worker spinning (docs/operators.md, "The threshold").
SHORT_SECTION_US = 40.0
AFTER_LIMIT_S = 0.05          # spin after a node lasts a few ms at most; later samples stay unattributed
LABEL_MIN_SHARE = 0.05        # op types under 5% of a function's samples are left out of its label
LABEL_MAX_OPS = 3
LABEL_LIST_MIN_PCT = 0.05     # labelled functions listed in the report (all frames keep their label)
WAIT_CATEGORIES = ("spin", "caller_spin", "sync")
_UNNAMED = re.compile(r"!fn_[0-9a-f]+$|\+0x[0-9a-f]+$")
DURING, AFTER = 1, 2


class _Spans:
    """Node runs of one thread or one session, searchable by time."""

    def __init__(self, indices, nodes):
        indices = sorted(indices, key=lambda i: nodes[i].start)
        self.indices = indices
        self.starts = [nodes[i].start for i in indices]
        self.ends = [nodes[i].end for i in indices]
        self.longest = max((nodes[i].seconds for i in indices), default=0.0)

    def find(self, time):
        """(node index, DURING | AFTER) or (None, None)."""
        position = bisect_right(self.starts, time) - 1
        if position < 0:
            return None, None
        scan = position
        earliest = time - self.longest
        while scan >= 0 and self.starts[scan] >= earliest:   # overlapping runs (parallel execution)
            if self.ends[scan] >= time:
                return self.indices[scan], DURING
            scan -= 1
        if time - self.ends[position] <= AFTER_LIMIT_S:
            return self.indices[position], AFTER
        return None, None


def _thread_spans(profile, nodes, pools):
    """tid -> _Spans for every sampled thread that can be joined."""
    by_tid, by_session = defaultdict(list), defaultdict(list)
    for index, node in enumerate(nodes):
        by_tid[node.tid].append(index)
        by_session[node.session].append(index)
    sessions = {session: _Spans(indices, nodes) for session, indices in by_session.items()}
    only_session = next(iter(sessions.values())) if len(sessions) == 1 else None
    spans = {}
    for tid, thread in profile.threads.items():
        if tid in by_tid:
            spans[tid] = _Spans(by_tid[tid], nodes)
        elif tid in pools and pools[tid].session in sessions:
            spans[tid] = sessions[pools[tid].session]
        elif only_session is not None and thread.role in (roles_mod.INTRA_WORKER, roles_mod.INTER_WORKER):
            spans[tid] = only_session
    return spans


class _Join:
    """Sampled ns per node run, node and stripped frame."""

    def __init__(self, profile, nodes, pools, run_ends):
        self.profile = profile
        self.nodes = nodes
        self.run_ends = run_ends         # node run index -> end of the run() it belongs to
        self.between_ns = 0              # spin + sync after the last node of a run(), before the next
        self.cpu_ns: Counter[Tuple[int, str]] = Counter()    # (session, node) -> ns during its runs
        self.wait_ns: Counter[Tuple[int, str]] = Counter()   # (session, node) -> spin + sync ns in or after its runs
        self.wait_by_run: Counter[int] = Counter()           # node run index -> spin + sync ns
        self.frame_ops: DefaultDict[int, Counter[str]] = defaultdict(Counter)   # frame id -> op -> ns
        self.joined_ns = 0
        self.during_ns = 0
        self._unnamed: Dict[int, Tuple[int, ...]] = {}       # stack id -> its stripped frames' ids
        spans = _thread_spans(profile, nodes, pools)
        for tid, thread_spans in spans.items():
            self._thread(profile.threads[tid], thread_spans)

    def _unnamed_frames(self, stack_id):
        frames = self._unnamed.get(stack_id)
        if frames is None:
            profile = self.profile
            frames = self._unnamed[stack_id] = tuple(dict.fromkeys(
                frame_id for frame_id in profile.stacks[stack_id].frames
                if profile.mapping_of(frame_id).kind == ORT and _UNNAMED.search(profile.frames[frame_id].name)))
        return frames

    def _thread(self, thread, spans):
        categories: Dict[int, str] = {}     # stack id -> category
        nodes = self.nodes
        for time, stack_id, ns in zip(thread.times, thread.stack_ids, thread.weights_ns):
            category = categories.get(stack_id)
            if category is None:
                category = categories[stack_id] = stack_category(self.profile, stack_id, thread.role)
            self.joined_ns += ns
            index, how = spans.find(time)
            if index is None:
                continue
            node = nodes[index]
            key = (node.session, node.node)
            if how != DURING and time > self.run_ends[index]:
                if category in WAIT_CATEGORIES:
                    self.between_ns += ns   # idle between requests: no node's doing
                continue
            if category in WAIT_CATEGORIES:
                self.wait_ns[key] += ns
                self.wait_by_run[index] += ns
            if how != DURING:
                continue
            self.during_ns += ns
            self.cpu_ns[key] += ns
            for frame_id in self._unnamed_frames(stack_id):
                self.frame_ops[frame_id][node.op] += ns


def frame_label(ns_by_op):
    """"MatMul 81%, Gemm 17%": the op types a function ran under, by sampled time."""
    total = sum(ns_by_op.values())
    parts = [f"{op} {100 * ns / total:.0f}%" for op, ns in ns_by_op.most_common(LABEL_MAX_OPS)
             if ns >= LABEL_MIN_SHARE * total]
    return ", ".join(parts)


def _label_frames(profile, join, scale):
    """One label per function: its frames (one per sampled address) share it."""
    by_function: DefaultDict[Tuple[str, int], Counter[str]] = defaultdict(Counter)   # (name, mapping) -> op -> ns
    frame_ids = defaultdict(list)
    for frame_id, ns_by_op in join.frame_ops.items():
        frame = profile.frames[frame_id]
        by_function[(frame.name, frame.mapping)].update(ns_by_op)
        frame_ids[(frame.name, frame.mapping)].append(frame_id)
    rows = []
    for key, ns_by_op in by_function.items():
        label = frame_label(ns_by_op)
        for frame_id in frame_ids[key]:
            profile.frames[frame_id].ops = label
        rows.append(FrameOps(key[0], label, round(sum(ns_by_op.values()) * scale, 2)))
    return sorted((row for row in rows if row.cpu_pct >= LABEL_LIST_MIN_PCT), key=lambda row: (-row.cpu_pct, row.function))


@dataclass
class _Group:
    """The node runs of one row of _rows."""
    op: str                   # of the last node run added (an op-type row: its op type)
    provider: str             # of the last node run added
    calls: int = 0
    seconds: float = 0.0
    stats: int = 0            # runs with scheduling stats
    parallel: int = 0         # runs that opened parallel sections
    workers: int = 0          # pool workers that took part, summed over those runs
    keys: Set[Tuple[int, str]] = field(default_factory=set)   # (session, node)


def _rows(nodes, join, scale, inferences, run_seconds, by_node):
    """OperatorRow per (session, node) when `by_node`, else per (session, op type); by time."""
    groups: Dict[Tuple[int, str], _Group] = {}
    for node in nodes:
        key = (node.session, node.node if by_node else node.op)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(node.op, node.provider)
        group.calls += 1
        group.seconds += node.seconds
        group.op, group.provider = node.op, node.provider
        group.keys.add((node.session, node.node))
        if node.sections is not None:
            group.stats += 1
            if node.sections:
                group.parallel += 1
                group.workers += node.workers
    rows = []
    for (session, name), group in groups.items():
        runs, run_s = inferences.get(session), run_seconds.get(session)
        cpu = sum(join.cpu_ns[key] for key in group.keys) if join else None
        wait = sum(join.wait_ns[key] for key in group.keys) if join else None
        rows.append(OperatorRow(
            session=session, op=group.op, node=name if by_node else None, provider=group.provider,
            calls=group.calls, total_ms=round(group.seconds * 1000, 3),
            ms_per_inference=round(group.seconds * 1000 / runs, 4) if runs else None,
            run_share_pct=round(100 * group.seconds / run_s, 2) if run_s else None,
            mean_us=round(group.seconds * 1e6 / group.calls, 1),
            parallel_calls_pct=round(100 * group.parallel / group.stats, 1) if group.stats else None,
            workers_mean=round(group.workers / group.parallel, 2) if group.parallel else None,
            cpu_pct=round(cpu * scale, 2) if cpu is not None else None,
            spin_sync_pct=round(wait * scale, 2) if wait is not None else None))
    return sorted(rows, key=lambda row: (-row.total_ms, row.session, row.op, row.node or ""))


def section_us(node):
    """Mean length of a node's parallel sections: its time split over the sections it opened."""
    return node.seconds * 1e6 / node.sections


def _parallel(nodes, join, scale, inferences):
    with_stats = [index for index, node in enumerate(nodes) if node.sections is not None]
    if not with_stats:
        return None
    sections = [index for index in with_stats if nodes[index].sections]
    short = [index for index in sections if section_us(nodes[index]) < SHORT_SECTION_US]
    runs = sum(inferences.values())
    wait = sum(join.wait_by_run[index] for index in short) if join else None
    by_session = Counter(nodes[index].session for index in short)
    return ParallelSections(
        node_runs=len(sections), per_inference=round(len(sections) / runs, 1) if runs else None,
        threshold_us=SHORT_SECTION_US, short=len(short),
        short_share_pct=round(100 * len(short) / len(sections), 1) if sections else None,
        short_spin_sync_pct=round(wait * scale, 2) if wait is not None else None,
        workers_mean=round(sum(nodes[i].workers for i in sections) / len(sections), 2) if sections else None,
        no_worker_pct=round(100 * sum(1 for i in sections if not nodes[i].workers) / len(sections), 1)
        if sections else None,
        sessions=[session for session, _count in by_session.most_common()])


def clock_alignment(model_runs, hook_runs):
    """How well ORT's model_run events sit inside the hook's run() spans once both are on
    perf's clock. With lead = ORT start - hook start and lag = hook end - ORT end, an
    offset error e makes lead = true lead + e and lag = true lag - e, both true values
    >= 0: so -min(lag) <= e <= min(lead)."""
    by_tid = defaultdict(list)
    for run in hook_runs:
        by_tid[run.tid].append(run)
    for runs in by_tid.values():
        runs.sort(key=lambda run: run.start)
    starts = {tid: [run.start for run in runs] for tid, runs in by_tid.items()}
    leads, lags = [], []
    for _session, tid, start, seconds in model_runs:
        position = bisect_right(starts.get(tid, []), start) - 1
        if position < 0:
            continue
        hook = by_tid[tid][position]
        lead, lag = start - hook.start, hook.start + hook.seconds - (start + seconds)
        if lead <= hook.seconds:
            leads.append(lead * 1e6)
            lags.append(lag * 1e6)
    if not leads:
        return ClockAlignment(0, None, None, None)
    return ClockAlignment(len(leads), round(median(leads), 1), round(median(lags), 1),
                          round(max(abs(min(leads)), abs(min(lags))), 1))


def run_ends(nodes, model_runs):
    """End of the run() (ORT's model_run) each node run belongs to; its own end when none holds it."""
    by_session = defaultdict(list)
    for session, _tid, start, seconds in model_runs:
        by_session[session].append((start, start + seconds))
    for runs in by_session.values():
        runs.sort()
    starts = {session: [start for start, _end in runs] for session, runs in by_session.items()}
    ends = []
    for node in nodes:
        position = bisect_right(starts.get(node.session, []), node.start) - 1
        run_end = by_session[node.session][position][1] if position >= 0 else node.end
        ends.append(run_end if run_end >= node.end else node.end)
    return ends


def node_threads(data):
    """session -> threads that ran its nodes (ORT's kernel TIDs)."""
    threads = defaultdict(set)
    for node in data.nodes:
        threads[node.session].add(node.tid)
    return threads


def operators_section(profile, data, pools, window_seconds, top=15):
    """OperatorsSection of the run; labels the profile's stripped frames as a side effect."""
    nodes = data.nodes
    profiled = set(data.files)
    hook_runs = [run for run in profile.runs if run.session in profiled]
    run_seconds: DefaultDict[int, float] = defaultdict(float)   # session -> the hook's run() seconds
    for run in hook_runs:
        run_seconds[run.session] += run.seconds
    inferences = Counter(session for session, _tid, _start, _seconds in data.model_runs)
    scale = 100.0 / (window_seconds * 1e9)
    join = _Join(profile, nodes, pools, run_ends(nodes, data.model_runs)) if profile.has_samples and nodes else None
    node_seconds = sum(node.seconds for node in nodes)
    total_run = sum(run_seconds.values())
    section = OperatorsSection(
        source="ort-profile", files=[data.files[s] for s in sorted(data.files)], node_runs=len(nodes),
        inferences=sum(inferences.values()), run_ms=round(total_run * 1000, 3) if hook_runs else None,
        node_ms=round(node_seconds * 1000, 3),
        node_share_pct=round(100 * node_seconds / total_run, 1) if total_run else None,
        ops=_rows(nodes, join, scale, inferences, run_seconds, by_node=False)[:top],
        nodes=_rows(nodes, join, scale, inferences, run_seconds, by_node=True)[:top],
        parallel=_parallel(nodes, join, scale, inferences),
        alignment=clock_alignment(data.model_runs, hook_runs),
        notes=list(data.notes))
    if join is not None:
        section.samples_in_nodes_pct = round(100 * join.during_ns / join.joined_ns, 1) if join.joined_ns else None
        section.between_runs_spin_sync_pct = round(join.between_ns * scale, 2)
        section.frames = _label_frames(profile, join, scale)
    if not nodes:
        section.notes.append("ORT's profile has no node runs inside the recording window")
    return section


def pool_workers(pools, thread_rows):
    """pool_workers[] of the report: each pool thread with its session, pool and CPU."""
    rows = {row.tid: row for row in thread_rows}
    workers = []
    for tid, pool in sorted(pools.items()):
        row = rows.get(tid)
        workers.append(PoolWorker(
            tid=tid, session=pool.session, pool=pool.pool, evidence=pool.evidence,
            role=row.role if row else roles_mod.IDLE,
            cpu_pct=row.cpu_pct if row else None,
            spin_pct=row.categories.get("spin") if row and row.categories else None))
    return workers
