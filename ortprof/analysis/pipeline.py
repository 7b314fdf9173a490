"""Report sections computed from a Profile: thread roles and categories, totals,
hot paths, functions and spots (the futex table is the futex signal's). Pure
arithmetic over the model; the decisions it applies (role rules, raw classes)
live in roles.py and stacks.py.
"""
from collections import Counter
from typing import Tuple

from ..model.report import CATEGORIES, FunctionShare, HotPath, HotSpot, ThreadRow, TopFunctions, Totals
from . import roles as roles_mod
from .perfscript import Frame
from .stacks import COMPUTE, KERNEL_CLASS, OTHER_CLASS, PYTHON_CLASS, SPIN, SYNC, StackSymbolizer

_RAW_TO_CATEGORY = {COMPUTE: "compute", SYNC: "sync", KERNEL_CLASS: "kernel",
                    PYTHON_CLASS: "python", OTHER_CLASS: "other"}
MISMATCH_LIMIT_PCT = 10.0


def category_of(raw, role):
    if raw == SPIN:
        return "caller_spin" if role == roles_mod.CALLER else "spin"
    return _RAW_TO_CATEGORY[raw]


def stack_category(profile, stack_id, role):
    return category_of(profile.stacks[stack_id].raw_class, role)


def assign_roles(profile, caller_tids):
    """Fill in each sampled thread's role (hook callers are callers whatever their stacks say)."""
    for tid, thread in profile.threads.items():
        thread.role = roles_mod.assign_role(thread.evidence, tid in caller_tids)


def role_of(profile, tid, caller_tids):
    thread = profile.threads.get(tid)
    return thread.role if thread else roles_mod.assign_role(None, tid in caller_tids)


def thread_table(profile, window_seconds, proc_cpu, caller_tids):
    """threads[] of the report: role, CPU % of one core and its categories; busiest first."""
    scale = 100.0 / (window_seconds * 1e9)
    rows = []
    for tid in sorted(set(profile.threads) | set(proc_cpu)):
        thread = profile.threads.get(tid)
        role = role_of(profile, tid, caller_tids)
        categories = dict.fromkeys(CATEGORIES, 0.0)
        if thread:
            for stack_id, ns in thread.ns_by_stack.items():
                categories[stack_category(profile, stack_id, role)] += ns * scale
        rows.append(ThreadRow(
            tid=tid, role=role, cpu_pct=round(sum(categories.values()), 2),
            proc_cpu_pct=round(proc_cpu[tid], 2) if tid in proc_cpu else None,
            samples=thread.samples if thread else 0,
            categories={name: round(value, 2) for name, value in categories.items()}))
    return sorted(rows, key=lambda row: -max(row.cpu_pct, row.proc_cpu_pct or 0))


def proc_only_threads(proc_cpu, caller_tids):
    """threads[] when there are no perf samples: /proc CPU only."""
    return [ThreadRow(tid=tid, role=roles_mod.CALLER if tid in caller_tids else roles_mod.UNKNOWN,
                      cpu_pct=None, proc_cpu_pct=round(cpu, 2))
            for tid, cpu in sorted(proc_cpu.items(), key=lambda item: -item[1])]


def totals(threads, proc_process_cpu):
    sums = {name: sum(row.categories[name] for row in threads) for name in CATEGORIES}
    cpu = sum(sums.values())
    result = Totals(cpu_pct=round(cpu, 2), proc_cpu_pct=proc_process_cpu,
                    **{f"{name}_pct": round(value, 2) for name, value in sums.items()})
    if proc_process_cpu:
        result.mismatch_pct = round(100.0 * (cpu - proc_process_cpu) / proc_process_cpu, 1)
        result.mismatch = bool(abs(result.mismatch_pct) > MISMATCH_LIMIT_PCT
                               and max(cpu, proc_process_cpu) >= 2.0)
    return result


def hot_paths(profile, window_seconds, top=15):
    """(top call paths per role and category, top functions by self and total time)."""
    scale = 100.0 / (window_seconds * 1e9)
    paths: Counter[Tuple[str, str, str]] = Counter()   # (role, category, folded stack) -> ns
    stack_ns: Counter[int] = Counter()                 # stack id -> ns
    for thread in profile.threads.values():
        for stack_id, ns in thread.ns_by_stack.items():
            paths[(thread.role, stack_category(profile, stack_id, thread.role), profile.folded(stack_id))] += ns
            stack_ns[stack_id] += ns
    self_ns: Counter[str] = Counter()      # function -> ns as the leaf
    total_ns: Counter[str] = Counter()     # function -> ns anywhere in the stack
    for stack_id, ns in stack_ns.items():
        names = profile.names(stack_id)
        if names:
            self_ns[names[-1]] += ns
        for name in dict.fromkeys(names):   # a recursive function counts once per stack; ordered: ties stay stable
            total_ns[name] += ns

    def shares(ns_by_name):
        return [FunctionShare(name, round(ns * scale, 2)) for name, ns in ns_by_name.most_common(top)]
    return ([HotPath(role, category, round(ns * scale, 2), stack)
             for (role, category, stack), ns in paths.most_common(top)],
            TopFunctions(self=shares(self_ns), total=shares(total_ns)))


def hot_spots(profile, window_seconds, symbolizer, top=10):
    """The hottest sampled instructions, with file:line where the DSO has DWARF (a few lookups only).
    The source line is also kept on the profile's frame, for the exporters."""
    scale = 100.0 / (window_seconds * 1e9)
    leaf_ns: Counter[int] = Counter()      # frame id -> ns as the leaf
    for thread in profile.threads.values():
        for stack_id, ns in thread.ns_by_stack.items():
            frame_ids = profile.stacks[stack_id].frames
            if frame_ids:
                leaf_ns[frame_ids[-1]] += ns
    spots = []
    for frame_id, ns in leaf_ns.most_common(top):
        frame = profile.frames[frame_id]
        dso = profile.mappings[frame.mapping].path
        frame.source = symbolizer.source_line(Frame(frame.address, None, 0, dso))
        spots.append(HotSpot(frame.name, dso, hex(frame.address), round(ns * scale, 2), frame.source))
    return spots


def make_symbolizer(with_ort_symbols=True, source_lines=True, notes=None):
    """StackSymbolizer wired to the stripped-binary symbolizer, where available. `notes` (the
    run's) gets a line for each binary it cannot read, and one if the symbolizer cannot load."""
    notes = notes if notes is not None else []
    lookup = None
    if with_ort_symbols:
        try:
            from ..symbols.resolver import Symbolizer
            lookup = Symbolizer().for_dso
        except ImportError as error:
            notes.append(f"ortprof's symbolizer cannot be loaded ({error}): ORT's frames that perf did not "
                         "name stay addresses and spin-wait in them is counted as compute")
    return StackSymbolizer(lookup, source_lines, notes)
