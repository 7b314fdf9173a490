"""The report pipeline: samples -> symbolized stacks -> thread roles -> categories -> findings.

`aggregate_samples` is the only step that sees every sample; it folds them
into per-thread counters and stack tables as they stream by, so memory grows
with the number of distinct stacks, not with the recording.
"""
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

from . import roles as roles_mod
from .futex import FutexAccumulator, caller_path
from .stacks import COMPUTE, KERNEL_CLASS, OTHER_CLASS, PYTHON_CLASS, SPIN, SYNC, StackSymbolizer, classify_stack

# Report categories (JSON names in totals are <category>_pct).
CATEGORIES = ("compute", "spin", "caller_spin", "sync", "kernel", "python", "other")
_RAW_TO_CATEGORY = {COMPUTE: "compute", SYNC: "sync", KERNEL_CLASS: "kernel",
                    PYTHON_CLASS: "python", OTHER_CLASS: "other"}
MISMATCH_LIMIT_PCT = 10.0


@dataclass
class ThreadAggregate:
    raw_ns: Counter = field(default_factory=Counter)        # raw class -> ns
    stacks: Counter = field(default_factory=Counter)        # (raw class, folded stack) -> ns
    evidence: roles_mod.ThreadEvidence = field(default_factory=roles_mod.ThreadEvidence)
    samples: int = 0
    comm: str = ""


@dataclass
class Aggregate:
    threads: dict = field(default_factory=lambda: defaultdict(ThreadAggregate))
    futex: FutexAccumulator = field(default_factory=FutexAccumulator)
    first_time: float = None
    last_time: float = None
    cpu_samples: int = 0
    events: Counter = field(default_factory=Counter)
    leaf_ns: Counter = field(default_factory=Counter)       # leaf Frame -> ns, for hot spots


class _StackFacts(NamedTuple):
    names: list          # leaf first
    raw: str             # raw CPU class
    folded: str          # root;...;leaf
    evidence: roles_mod.StackEvidence


STACK_CACHE_LIMIT = 200_000   # distinct stacks whose derived facts are kept


def aggregate_samples(samples, symbolizer, window=None):
    """One streaming pass over decoded samples. Everything derived from a stack
    (names, class, role evidence) is computed once per distinct stack."""
    aggregate = Aggregate()
    names_of = {}
    facts_of = {}
    futex_path_of = {}   # futex entries repeat a handful of stacks thousands of times

    def names_for(frames):
        names = []
        for frame in frames:
            name = names_of.get(frame)
            if name is None:
                name = names_of[frame] = symbolizer.frame_name(frame)
            names.append(name)
        return names

    for sample in samples:
        if window and not (window[0] <= sample.time <= window[1]):   # both CLOCK_MONOTONIC (perf -k mono)
            continue
        aggregate.events[sample.event] += 1
        if aggregate.first_time is None:
            aggregate.first_time = sample.time
        aggregate.last_time = sample.time
        if sample.is_futex_enter:
            path = futex_path_of.get(sample.frames)
            if path is None:
                if len(futex_path_of) >= STACK_CACHE_LIMIT:
                    futex_path_of.clear()
                path = futex_path_of[sample.frames] = caller_path(sample.frames, names_for(sample.frames))
            aggregate.futex.enter(sample, path)
            continue
        if sample.is_futex_exit:
            aggregate.futex.exit(sample)
            continue
        if not sample.is_cpu:
            continue
        frames = sample.frames
        facts = facts_of.get(frames)
        if facts is None:
            if len(facts_of) >= STACK_CACHE_LIMIT:
                facts_of.clear()
            names = names_for(frames)
            facts = facts_of[frames] = _StackFacts(
                names, classify_stack(frames, names, symbolizer), ";".join(reversed(names)) or "[no stack]",
                roles_mod.stack_evidence(frames, names))
        aggregate.cpu_samples += 1
        thread = aggregate.threads[sample.tid]
        thread.samples += 1
        thread.comm = sample.comm
        thread.raw_ns[facts.raw] += sample.period
        thread.stacks[(facts.raw, facts.folded)] += sample.period
        thread.evidence.add(facts.evidence)
        if frames:
            aggregate.leaf_ns[frames[0]] += sample.period
    return aggregate


def category_of(raw, role):
    if raw == SPIN:
        return "caller_spin" if role == roles_mod.CALLER else "spin"
    return _RAW_TO_CATEGORY[raw]


def thread_table(aggregate, window_seconds, proc_cpu, caller_tids):
    """threads[] of the report: role, CPU % of one core and its categories."""
    scale = 100.0 / (window_seconds * 1e9)
    tids = set(aggregate.threads) | set(proc_cpu)
    rows = []
    for tid in sorted(tids):
        thread = aggregate.threads.get(tid)
        role = roles_mod.assign_role(thread.evidence if thread else None, tid in caller_tids)
        categories = dict.fromkeys(CATEGORIES, 0.0)
        if thread:
            for raw, ns in thread.raw_ns.items():
                categories[category_of(raw, role)] += ns * scale
        cpu = sum(categories.values())
        rows.append({
            "tid": tid, "role": role, "cpu_pct": round(cpu, 2),
            "proc_cpu_pct": round(proc_cpu[tid], 2) if tid in proc_cpu else None,
            "samples": thread.samples if thread else 0,
            "categories": {name: round(value, 2) for name, value in categories.items()},
        })
    return sorted(rows, key=lambda row: -max(row["cpu_pct"], row["proc_cpu_pct"] or 0))


def totals(threads, proc_process_cpu):
    sums = {name: sum(row["categories"][name] for row in threads) for name in CATEGORIES}
    cpu = sum(sums.values())
    result = {"cpu_pct": round(cpu, 2), "proc_cpu_pct": proc_process_cpu}
    result.update({f"{name}_pct": round(value, 2) for name, value in sums.items()})
    result["mismatch_pct"] = None
    if proc_process_cpu:
        result["mismatch_pct"] = round(100.0 * (cpu - proc_process_cpu) / proc_process_cpu, 1)
    result["mismatch"] = bool(result["mismatch_pct"] is not None and abs(result["mismatch_pct"]) > MISMATCH_LIMIT_PCT
                              and max(cpu, proc_process_cpu) >= 2.0)
    return result


def futex_table(aggregate, window_seconds, inferences, roles_by_tid, top=8):
    threads = []
    total_calls, total_seconds = 0, 0.0
    for tid, stats in sorted(aggregate.futex.threads.items()):
        total_calls += stats.calls
        total_seconds += stats.seconds
        threads.append({
            "tid": tid, "role": roles_by_tid.get(tid, roles_mod.UNKNOWN), "calls": stats.calls,
            "waits": stats.waits, "wakes": stats.wakes,
            "calls_per_s": round(stats.calls / window_seconds, 1),
            "time_ms_per_s": round(1000 * stats.seconds / window_seconds, 2),
            "calls_per_inference": round(stats.calls / inferences, 2) if inferences else None,
        })
    return {
        "recorded": any(name.endswith("sys_enter_futex") for name in aggregate.events),
        "calls": total_calls,
        "calls_per_s": round(total_calls / window_seconds, 1),
        "time_ms_per_s": round(1000 * total_seconds / window_seconds, 2),
        "calls_per_inference": round(total_calls / inferences, 2) if inferences else None,
        "threads": sorted(threads, key=lambda row: -row["calls"]),
        "top_stacks": [{"stack": stack, "calls": count}
                       for stack, count in aggregate.futex.stacks.most_common(top)],
    }


def hot_paths(aggregate, window_seconds, roles_by_tid, top=15):
    """(top folded call paths per role and category, top functions by self and total time)."""
    scale = 100.0 / (window_seconds * 1e9)
    paths = Counter()
    self_time, total_time = Counter(), Counter()
    for tid, thread in aggregate.threads.items():
        role = roles_by_tid.get(tid, roles_mod.UNKNOWN)
        for (raw, stack), ns in thread.stacks.items():
            paths[(role, category_of(raw, role), stack)] += ns
            frames = stack.split(";")
            self_time[frames[-1]] += ns
            for name in set(frames):
                total_time[name] += ns
    top_paths = [{"role": role, "category": category, "cpu_pct": round(ns * scale, 2), "stack": stack}
                 for (role, category, stack), ns in paths.most_common(top)]
    top_functions = {
        "self": [{"function": name, "cpu_pct": round(ns * scale, 2)} for name, ns in self_time.most_common(top)],
        "total": [{"function": name, "cpu_pct": round(ns * scale, 2)} for name, ns in total_time.most_common(top)],
    }
    return top_paths, top_functions


def hot_spots(aggregate, window_seconds, symbolizer, top=10):
    """The hottest sampled instructions, with file:line where the DSO has DWARF (a few lookups only)."""
    scale = 100.0 / (window_seconds * 1e9)
    return [{"function": symbolizer.frame_name(frame), "dso": frame.dso, "address": hex(frame.addr),
             "cpu_pct": round(ns * scale, 2), "source": symbolizer.source_line(frame)}
            for frame, ns in aggregate.leaf_ns.most_common(top)]


def folded_lines(aggregate, roles_by_tid):
    """Folded stacks for flamegraph.pl / inferno / speedscope: `role-tid;frames... count`."""
    for tid, thread in sorted(aggregate.threads.items()):
        role = roles_by_tid.get(tid, roles_mod.UNKNOWN)
        for (raw, stack), ns in sorted(thread.stacks.items(), key=lambda item: -item[1]):
            yield f"{role}-{tid};{stack} {max(1, round(ns / 1e6))}"


def make_symbolizer(with_ort_symbols=True, source_lines=True):
    """StackSymbolizer wired to the stripped-binary symbolizer, where available."""
    lookup = None
    if with_ort_symbols:
        try:
            from ..symbols.resolver import Symbolizer
            lookup = Symbolizer().for_dso
        except ImportError:
            lookup = None
    return StackSymbolizer(lookup, source_lines)
