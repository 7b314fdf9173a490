"""Futex syscalls: calls, time inside, per thread, and the stacks that issue them.

Two sources fill the same accumulator: perf's per-call tracepoints (every call,
with its stack: method "perf-tracepoints"), or a bpftrace program's in-kernel
counters (exact counts and times) plus perf's tracepoint sampled every Nth call
for the stacks (method "bpftrace", see bpf.py).
"""
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Optional

from ...analysis.stacks import KERNEL, SYSLIB, module_kind

BPF_METHOD, PERF_METHOD = "bpftrace", "perf-tracepoints"   # what filled the accumulator

_OP = re.compile(r"op:\s*(0x[0-9a-f]+|\d+)")
WAIT_OPS = {0: "wait", 9: "wait", 6: "lock", 11: "wait"}  # FUTEX_WAIT, WAIT_BITSET, LOCK_PI, WAIT_REQUEUE_PI
TOP_STACK_FRAMES = 6


def futex_op(trace):
    match = _OP.search(trace or "")
    if not match:
        return None
    op = int(match.group(1), 0) & 0x7F   # drop FUTEX_PRIVATE_FLAG / CLOCK_REALTIME
    return WAIT_OPS.get(op, "wake")


@dataclass
class FutexThreadStats:
    calls: int = 0
    waits: int = 0
    wakes: int = 0
    seconds: float = 0.0
    wait_seconds: float = 0.0     # time blocked: inside wait calls
    pending_enter: Optional[float] = None
    pending_wait: bool = False


@dataclass
class FutexAccumulator:
    threads: dict = field(default_factory=lambda: defaultdict(FutexThreadStats))
    stacks: Counter = field(default_factory=Counter)   # caller path -> entries seen with a stack
    method: str = PERF_METHOD
    stack_sample_period: int = 1                       # one stack per this many calls

    def use_counts(self, threads, stack_sample_period):
        """Exact per-thread counts (bpftrace) replace what the sampled entries counted."""
        self.threads = defaultdict(FutexThreadStats, threads)
        self.method = BPF_METHOD
        self.stack_sample_period = max(1, int(stack_sample_period or 1))

    def enter(self, sample, path):
        """`path`: the caller path of the entry's stack (see caller_path)."""
        stats = self.threads[sample.tid]
        stats.calls += 1
        kind = futex_op(sample.trace)
        if kind == "wake":
            stats.wakes += 1
        else:
            stats.waits += 1
        stats.pending_enter = sample.time
        stats.pending_wait = kind != "wake"
        self.stacks[path] += 1

    def exit(self, sample):
        stats = self.threads[sample.tid]
        if stats.pending_enter is not None:
            blocked = max(0.0, sample.time - stats.pending_enter)
            stats.seconds += blocked
            if stats.pending_wait:
                stats.wait_seconds += blocked
            stats.pending_enter = None


def caller_path(frames, names):
    """The few frames above libc/kernel that decided to call futex, root-most first."""
    start = 0
    while start < len(frames) and module_kind(frames[start].dso) in (KERNEL, SYSLIB):
        start += 1
    start = max(0, start - 1)   # keep the libc entry (pthread_cond_wait, sem_timedwait, syscall)
    return ";".join(reversed(names[start:start + TOP_STACK_FRAMES]))
