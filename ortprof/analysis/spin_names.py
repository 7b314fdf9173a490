"""Spin-wait from frame names, for builds perf can name (source builds, debug files).

The stripped wheel's spin sites are found by decoding instructions
(symbols/spin.py); here the decision is made from the names alone.
"""
import re
from typing import Optional, Sequence, Tuple

from ..symbols.spin import SPIN_LOOP, SPIN_LOOP_CALLEE, SPIN_PRIMITIVE

# Functions that spin-wait: the worker's idle spin, and the caller's wait at
# the end of a parallel section.
WORKER_SPINNER = re.compile(r"ThreadPoolTempl<[^>]*>::WorkerLoop\b")
CALLER_SPINNER = re.compile(r"::(RunInParallel|RunInParallelSection|EndParallelSection(Internal)?)\b")
SPIN_PRIMITIVE_NAME = re.compile(r"\bSpinPause\b|^_mm_pause$|^__builtin_ia32_pause$")
# What a spin loop calls between pauses: queue polling, stealing, and (in
# Debug builds, where nothing is inlined) the std:: helpers those use. A
# std::function *invocation* runs a task and is not a helper.
_SPIN_HELPER = re.compile(
    r"^std::|RunQueue<|ThreadPoolTempl<[^>]*>::(Steal|NonEmptyQueueIndex|GetPerThread|Rand)\b"
    r"|SpinLoopStatus|^__tls_get_addr$")
_TASK_INVOCATION = re.compile(r"::operator\(\)|_M_invoke|_Function_handler")


def classify_named_frames(names: Sequence[str]) -> Optional[Tuple[str, str]]:
    """(rule, spinning function name) if a sample whose frames are `names` (leaf first) is spin.

    For frames perf already named. The walk from the leaf passes spin
    primitives and helpers and must reach a spinning function (WorkerLoop,
    RunInParallel, EndParallelSection...) without crossing a task invocation."""
    through_primitive = False
    for depth, name in enumerate(names):
        if WORKER_SPINNER.search(name) or CALLER_SPINNER.search(name):
            if through_primitive:
                return SPIN_PRIMITIVE, name
            return (SPIN_LOOP if depth == 0 else SPIN_LOOP_CALLEE), name
        if SPIN_PRIMITIVE_NAME.search(name):
            through_primitive = True
            continue
        if _TASK_INVOCATION.search(name) or not _SPIN_HELPER.search(name):
            return None
    return None
