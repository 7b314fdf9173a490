"""Rank lint findings by the time ORT's own profile says the affected nodes take.

`ortprof lint MODEL --ort-profile FILE`: FILE is what SessionOptions.enable_profiling
wrote (or `ortprof record --ort-profile` left in the run's hook/ directory). Each
finding concerns some op types (Transposes, the ops of unfused patterns, nodes on
the CPU provider); their node time per inference is added to its evidence and
the findings are sorted by it. Op types shared by several patterns (Add, Mul)
count in full for each, so the time is an upper bound of what a fix can save.
"""
from collections import Counter

from ..analysis.ort_profile import parse_ort_profile
from .placement import CPU_PROVIDER

# Op types an unfused pattern leaves in the optimized graph (lint/optimization.FUSION_PATTERNS).
PATTERN_OPS = {
    "conv+batchnorm": {"Conv", "BatchNormalization"},
    "conv+activation": {"Conv", "Relu", "LeakyRelu", "Sigmoid", "Clip", "HardSigmoid", "Tanh"},
    "matmul+bias": {"MatMul", "Add"},
    "layernorm": {"ReduceMean", "Sub", "Pow", "Sqrt", "Div", "Mul", "Add"},
    "gelu": {"Erf", "Div", "Mul", "Add"},
}


class ProfileTimes:
    """Node time by op type and by provider, per inference, from one ORT profile."""

    def __init__(self, path):
        trace = parse_ort_profile(path)
        self.path = str(path)
        self.inferences = len(trace.model_runs) or 1
        self.by_op, self.by_provider = Counter(), Counter()
        for node in trace.nodes:
            self.by_op[node.op] += node.dur_us
            self.by_provider[node.provider] += node.dur_us
        self.total_us = sum(self.by_op.values())

    def affected(self, ops=None, provider=None):
        us = sum(self.by_op[op] for op in ops) if ops is not None else self.by_provider[provider]
        return {"ms_per_inference": round(us / 1000 / self.inferences, 3),
                "share_of_node_time_pct": round(100 * us / self.total_us, 1) if self.total_us else None,
                **({"ops": sorted(op for op in ops if self.by_op[op])} if ops is not None else {"provider": provider}),
                "inferences": self.inferences}


def _unfused_ops(levels):
    unfused = (levels.get("all") or {}).get("unfused_patterns") or {}
    return set().union(*(PATTERN_OPS.get(name, set()) for name, count in unfused.items() if count))


def _fused_forms(consumers, profiled_ops):
    """Profiled op types that run what `consumers` (op types of the original graph) became:
    the same op, a fused one containing its name (FusedMatMul, FusedConv), Gemm for MatMul."""
    return {op for op in profiled_ops
            if any(consumer in op for consumer in consumers) or (op == "Gemm" and "MatMul" in consumers)}


def _affected(finding, times, levels, initializer_consumers):
    if finding.id == "initializer-inputs":
        ops = _fused_forms(initializer_consumers, times.by_op)
        return times.affected(ops=ops) if ops else None
    if finding.id == "unoptimized-graph":
        ops = _unfused_ops(levels)
        return times.affected(ops=ops) if ops else None
    if finding.id == "nhwc-transposes":
        return times.affected(ops={"Transpose"})
    if finding.id == "ep-fallback":
        return times.affected(provider=CPU_PROVIDER)
    return None


def initializer_consumers(model, names):
    """Op types of the nodes that read the initializers listed as graph inputs."""
    names = set(names)
    return {node.op_type for node in model.graph.node if names.intersection(node.input)}


def rank_by_profile(findings, times, levels, consumers=()):
    """`findings` with evidence["profile_time"] (from ProfileTimes `times`) where the profile
    says something, most time first; the others keep their order after them. `consumers`:
    initializer_consumers() of the model, for initializer-inputs."""
    measured = []
    for finding in findings:
        affected = _affected(finding, times, levels, set(consumers))
        if affected is not None:
            finding.evidence = dict(finding.evidence or {}, profile_time=affected)
        measured.append((affected["ms_per_inference"] if affected else -1.0, finding))
    return [finding for _ms, finding in sorted(measured, key=lambda item: -item[0])]
