"""Thread roles from stack evidence and the hook's caller TIDs.

ORT's workers are unnamed on Linux (they keep the process comm), so roles come
from where a thread's stacks are rooted: start_thread -> ORT's thread entry
-> WorkerLoop is a pool worker; a thread whose stacks run Python code and call
into ORT is a caller.
"""
import bisect
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

from .stacks import BLAS, ORT, PYTHON, module_kind

CALLER = "caller"
INTRA_WORKER = "intra-op-worker"
INTER_WORKER = "inter-op-worker"
NATIVE = "native-other"
PYTHON_THREAD = "python-other"
IDLE = "idle"          # no samples in the window
UNKNOWN = "unknown"

ROLES = (CALLER, INTRA_WORKER, INTER_WORKER, NATIVE, PYTHON_THREAD, IDLE, UNKNOWN)

_THREAD_START = re.compile(r"^(start_thread|clone3?|__clone|thread_start)$")
_INTER_OP = re.compile(r"ParallelExecutor|inter_op")


class StackEvidence(NamedTuple):
    """What one stack says about its thread's role (computed once per distinct stack)."""
    thread_root: Optional[str]   # module kind of the thread's entry frame, if the stack reaches it
    python_frames: bool
    python_calls_ort: bool       # Python frames below ORT frames: run() from Python
    inter_op: bool


def stack_evidence(frames, names):
    """frames/names leaf first."""
    kinds = [module_kind(frame.dso) for frame in frames]
    # Walk from the root past clone/start_thread: the next frame is the thread's entry.
    thread_root = None
    index = len(names) - 1
    while index > 0 and _THREAD_START.match(names[index].split("@")[0]):
        index -= 1
    if index < len(names) - 1:
        thread_root = kinds[index]
    has_python = PYTHON in kinds
    calls_ort = has_python and ORT in kinds and kinds.index(ORT) < len(kinds) - 1 - kinds[::-1].index(PYTHON)
    return StackEvidence(thread_root, has_python, calls_ort, any(_INTER_OP.search(name) for name in names if name))


@dataclass
class ThreadEvidence:
    samples: int = 0
    ort_rooted: int = 0          # start_thread -> ORT frame
    blas_rooted: int = 0
    python_frames: int = 0
    python_calls_ort: int = 0
    inter_op: int = 0
    root_modules: Counter = field(default_factory=Counter)

    def add(self, evidence):
        self.samples += 1
        if evidence.thread_root is not None:
            self.root_modules[evidence.thread_root] += 1
            if evidence.thread_root == ORT:
                self.ort_rooted += 1
            elif evidence.thread_root == BLAS:
                self.blas_rooted += 1
        self.python_frames += evidence.python_frames
        self.python_calls_ort += evidence.python_calls_ort
        self.inter_op += evidence.inter_op


def assign_role(evidence, is_hook_caller):
    """Role of one thread. Stacks are often cut short (MLAS kernels have no CFI,
    so DWARF unwinding stops at the leaf): a few complete stacks decide."""
    if is_hook_caller:
        return CALLER
    if evidence is None or evidence.samples == 0:
        return IDLE
    if evidence.python_calls_ort >= max(1, evidence.samples * 0.05) and evidence.ort_rooted == 0:
        return CALLER
    if evidence.ort_rooted and evidence.python_frames <= evidence.samples * 0.1:
        return INTER_WORKER if evidence.inter_op else INTRA_WORKER
    if evidence.python_frames >= evidence.samples * 0.3:
        return PYTHON_THREAD
    return NATIVE


# -- pools and sessions --------------------------------------------------------
INTRA_POOL, INTER_POOL = "intra-op", "inter-op"
POOL_ROLES = {INTRA_POOL: INTRA_WORKER, INTER_POOL: INTER_WORKER}


class PoolThread(NamedTuple):
    tid: int
    session: int
    pool: str          # INTRA_POOL | INTER_POOL
    evidence: str      # "session-creation": started while the session was created; "ort-profile": ran its nodes;
                       # "runs-together" (inferred): computed during that session's runs only


def _option_count(options, name):
    try:
        return int(options.get(name) or 0)
    except (TypeError, ValueError):
        return 0


def _intra_count(options, started):
    """How many of the `started` threads are intra-op workers. ORT creates the intra-op pool
    first, then (parallel execution only) the inter-op pool; a pool of N threads starts N-1."""
    if "PARALLEL" not in str(options.get("execution_mode") or "").upper():
        return started
    intra, inter = _option_count(options, "intra_op_num_threads"), _option_count(options, "inter_op_num_threads")
    if intra > 0:
        return min(started, intra - 1)
    if inter > 0:
        return max(0, started - (inter - 1))
    return (started + 1) // 2    # both pools default to one thread per physical core


def pool_threads(session_records, node_threads=None):
    """tid -> PoolThread from the hook's `session` records (threads that appeared while each
    session was created, in creation order) and, when ORT's profile is there, the threads
    that ran a session's nodes (`node_threads`: session -> tids): those are inter-op workers."""
    pools = {}
    for record in session_records:
        started = sorted(record.get("new_threads") or ())
        if not started:
            continue
        session = record["session"]
        intra = _intra_count(record.get("options") or {}, len(started))
        for index, tid in enumerate(started):
            pools[tid] = PoolThread(tid, session, INTRA_POOL if index < intra else INTER_POOL, "session-creation")
    for session, tids in (node_threads or {}).items():
        for tid in tids:
            known = pools.get(tid)
            if known is not None and known.session == session:
                pools[tid] = PoolThread(tid, session, INTER_POOL, "ort-profile")
    return pools


RUNS_TOGETHER = "runs-together"
MIN_TOGETHER_SAMPLES = 3       # a thread's compute samples inside runs before it is tied to a session
TOGETHER_SHARE = 0.9           # the share of them inside one session's runs


def pools_by_runs_together(profile, session_records, pools):
    """tid -> PoolThread, inferred, for the pool workers of sessions whose creation ortprof did not
    see (created before an attach, or timed by probes): a worker thread (by its stacks) that no
    session's creation claimed is tied to the session during whose runs it computed, when at least
    TOGETHER_SHARE of its compute samples inside runs fall in that one session's runs. Spin samples
    do not count: an idle pool spins through the other sessions' runs too. A process with one
    session, which ran: its worker threads are that session's."""
    from .stacks import COMPUTE
    unseen = {record["session"] for record in session_records
              if not record.get("new_threads") and record.get("session") is not None}
    if not unseen or not profile.runs:
        return {}
    ran = {run.session for run in profile.runs}
    only = next(iter(ran)) if len(ran) == 1 and len(session_records) == 1 and ran <= unseen else None
    spans = sorted((run.start, run.start + run.seconds, run.session) for run in profile.runs)
    starts = [start for start, _end, _session in spans]
    inferred = {}
    for tid, thread in profile.threads.items():
        if tid in pools or thread.role not in (INTRA_WORKER, INTER_WORKER):
            continue
        inside: Counter = Counter()
        for time, stack in zip(thread.times, thread.stack_ids):
            if profile.stacks[stack].raw_class != COMPUTE:
                continue
            index = bisect.bisect_right(starts, time) - 1
            if index >= 0 and time <= spans[index][1]:
                inside[spans[index][2]] += 1
        total = sum(inside.values())
        if only is not None:
            session, count = only, total
        elif total < MIN_TOGETHER_SAMPLES:
            continue
        else:
            session, count = inside.most_common(1)[0]
        if session in unseen and count >= TOGETHER_SHARE * total:
            pool = INTRA_POOL if thread.role == INTRA_WORKER else INTER_POOL
            inferred[tid] = PoolThread(tid, session, pool, RUNS_TOGETHER)
    return inferred


def apply_pool_roles(profile, pools):
    """Pool threads get their pool's role, whatever their (often truncated) stacks say; callers stay callers."""
    for tid, pool in pools.items():
        thread = profile.threads.get(tid)
        if thread is not None and thread.role not in (CALLER, IDLE):
            thread.role = POOL_ROLES[pool.pool]
