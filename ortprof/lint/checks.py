"""The lint findings, each derived from numbers the analysis already measured."""
import os
import shlex
from collections import Counter

from ..findings import Finding, severity_rank
from .placement import CPU_PROVIDER, MEMCPY_OPS

# Below this fraction of fusable patterns still present at level "all", the optimizer did its job.
UNFUSED_SHARE_FLAG = 0.5
# Transposes above this share of the optimized graph are worth re-exporting for.
TRANSPOSE_SHARE_WARN = 0.05
# Shape arithmetic ORT places on the CPU on purpose (cheap, and its results are needed on the host).
SHAPE_OPS = {"Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Reshape", "Slice", "Cast",
             "ConstantOfShape", "Range", "Equal", "Where", "Expand", "NonZero"}
LISTED = 20  # names shown per list in evidence


def _nodes(count):
    return f"{count} node" if count == 1 else f"{count} nodes"


def _fixed_name(model_path):
    stem, ext = os.path.splitext(model_path)
    return f"{stem}.fixed{ext or '.onnx'}"


def _fix_command(model_path):
    return f"ortprof lint {shlex.quote(model_path)} --fix {shlex.quote(_fixed_name(model_path))}"


def check_initializer_inputs(model_path, facts, names, levels, without):
    if not names:
        return None
    nodes_all = levels["all"]["nodes"]
    evidence = {"count": len(names), "names": names[:LISTED], "ir_version": facts["ir_version"],
                "nodes_at_all": nodes_all}
    title = f"{len(names)} initializers are also graph inputs, so ORT cannot treat them as constants"
    severity = "warning"
    if without is not None:
        evidence["nodes_at_all_without_them"] = without["nodes"]
        if without["nodes"] == nodes_all and without["unfused_patterns"] == levels["all"]["unfused_patterns"]:
            severity = "info"  # measured: nothing is blocked on the CPU provider
            title += f"; removing them changes nothing at level all ({_nodes(nodes_all)})"
        else:
            title += f"; without them level all gives {_nodes(without['nodes'])} instead of {nodes_all}"
    return Finding(
        id="initializer-inputs",
        severity=severity,
        title=title,
        evidence=evidence,
        remedy=_fix_command(model_path),
        tradeoff="Callers can no longer replace those weights at run time by feeding inputs with their names "
                 "(rarely intended).",
        explanation="Since IR version 4 an initializer listed in graph.input is only a default the caller may "
                    "override, so ORT keeps it as a runtime input: no constant folding and no fusion that needs "
                    "the weight's value (Conv+BatchNormalization, Gelu, ...). Old exporters and "
                    "torch.onnx.export(keep_initializers_as_inputs=True) produce such models.",
    )


def check_unoptimized_graph(model_path, levels, has_initializer_inputs):
    before, after = levels["disabled"]["unfused_patterns"], levels["all"]["unfused_patterns"]
    total_before, total_after = sum(before.values()), sum(after.values())
    if total_before == 0 or total_after / total_before < UNFUSED_SHARE_FLAG:
        return None
    nodes = {level: stats["nodes"] for level, stats in levels.items()}
    if has_initializer_inputs:
        remedy = _fix_command(model_path)
        tradeoff = "See initializer-inputs: the removed inputs can no longer be overridden."
    else:
        remedy = f"python -m onnxsim {shlex.quote(model_path)} {shlex.quote(_fixed_name(model_path))}" \
                 "  # pip install onnxsim; folds constants offline"
        tradeoff = "An extra offline step and dependency; compare the outputs of both models once."
    return Finding(
        id="unoptimized-graph",
        severity="warning",
        title=f"ORT's optimizer left {total_after} of {total_before} fusable patterns in place "
              f"(level all: {nodes['disabled']} -> {nodes['all']} nodes)",
        evidence={
            "patterns": {name: {"before": count, "after": after.get(name, 0)}
                         for name, count in before.items() if count},
            "nodes": nodes,
            "initializer_inputs": has_initializer_inputs,
        },
        remedy=remedy,
        tradeoff=tradeoff,
        explanation="ORT fuses Conv+BatchNormalization, Conv+activation, MatMul+bias (Gemm), LayerNorm and Gelu "
                    "subgraphs and folds constant subgraphs when the weights involved are constant initializers. "
                    "Patterns still present at level all mean ORT did not see those weights as constants "
                    "(initializers listed as inputs, weights computed at run time) or an intermediate result "
                    "is used elsewhere.",
    )


def check_nhwc_transposes(facts, levels):
    plain, optimized = levels["disabled"]["layout"], levels["all"]["layout"]
    if not plain["wrapped_spatial_ops"]:
        return None
    severity = "warning" if optimized["transpose_share"] >= TRANSPOSE_SHARE_WARN else "info"
    return Finding(
        id="nhwc-transposes",
        severity=severity,
        title=f"{plain['wrapped_spatial_ops']} Conv/Pool nodes are wrapped in NHWC<->NCHW Transposes "
              f"({plain['transposes']} Transposes, {plain['transpose_share']:.0%} of nodes); "
              f"{optimized['transposes']} remain after level all ({optimized['transpose_share']:.0%})",
        evidence={
            "wrapped_spatial_ops": plain["wrapped_spatial_ops"],
            "wrapping_transposes": plain["wrapping_transposes"],
            "examples": plain["wrapped_examples"],
            "transposes": {level: stats["layout"]["transposes"] for level, stats in levels.items()},
            "transpose_share": {level: stats["layout"]["transpose_share"] for level, stats in levels.items()},
        },
        remedy="python -m tf2onnx.convert --saved-model SAVED_MODEL_DIR --output model.onnx "
               f"--inputs-as-nchw {shlex.quote(','.join(i['name'] for i in facts['inputs']))} "
               f"--outputs-as-nchw {shlex.quote(','.join(o['name'] for o in facts['outputs']))}",
        tradeoff="Callers then feed and read NCHW tensors (one transpose on the host per request, "
                 "instead of one per Conv/Pool in the graph).",
        explanation="TensorFlow/Keras/TFLite models are channels-last; ONNX Conv and Pool are channels-first, so "
                    "converters wrap each of them in Transposes. ORT's transpose optimizer cancels adjacent "
                    "pairs, but every Transpose it cannot remove is a full tensor copy on each run.",
    )


def check_ep_fallback(placement_report):
    if not placement_report or placement_report.get("skipped"):
        return None
    preferred = [p for p in placement_report["requested"] if p != CPU_PROVIDER]
    counts = placement_report["node_counts"]
    cpu_count = counts.get(CPU_PROVIDER, 0)
    if not preferred or not cpu_count:
        return None
    total = sum(counts.values())
    cpu_nodes = [(n["op"], n["name"]) for n in placement_report["nodes"].get(CPU_PROVIDER, [])]
    forced = set(placement_report["forced_cpu"])
    unexpected = [(op, name) for op, name in cpu_nodes
                  if name not in forced and op not in SHAPE_OPS and op not in MEMCPY_OPS]
    all_on_cpu = set(counts) == {CPU_PROVIDER}
    memcpy = placement_report["memcpy_nodes"]
    if all_on_cpu:
        title = f"{CPU_PROVIDER} runs all {_nodes(total)}; {', '.join(preferred)} runs none"
        in_use = placement_report.get("session_providers") or []
        lost = [p for p in preferred if p not in in_use]
        if lost:
            title += f" (the session fell back: it uses {', '.join(in_use) or 'nothing'})"
    else:
        title = (f"{cpu_count} of {_nodes(total)} run on {CPU_PROVIDER} "
                 f"({len(unexpected)} beyond shape arithmetic); {memcpy} Memcpy nodes copy between devices")
    return Finding(
        id="ep-fallback",
        severity="warning" if all_on_cpu or unexpected else "info",
        title=title,
        evidence={
            "node_counts": counts,
            "cpu_ops": dict(Counter(op for op, _ in cpu_nodes).most_common()),
            "unexpected_cpu_nodes": [f"{op} ({name})" for op, name in unexpected[:LISTED]],
            "forced_cpu_nodes": len(forced),
            "missing_kernels": sorted({m["op"] for m in placement_report["missing_kernels"]}),
            "memcpy_nodes": memcpy,
            "session_providers": placement_report.get("session_providers"),
        },
        remedy='options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")'
               "  # fail at load instead of silently using the CPU",
        tradeoff="Session creation then fails until every node has a kernel on the preferred provider "
                 "(change the op, opset or dtype, or use a provider build that supports it).",
        explanation="ORT gives each node to the first provider in the list that has a kernel for it; the rest "
                    "runs on the CPU, and every device<->CPU boundary adds a Memcpy node and a synchronisation. "
                    "ORT also keeps small shape computations on the CPU on purpose, which is cheap.",
    )


def lint_findings(model_path, facts, levels, init_names, without, placement_report):
    candidates = [
        check_initializer_inputs(model_path, facts, init_names, levels, without),
        check_unoptimized_graph(model_path, levels, bool(init_names)),
        check_nhwc_transposes(facts, levels),
        check_ep_fallback(placement_report),
    ]
    found = [f for f in candidates if f is not None]
    return sorted(found, key=lambda f: -severity_rank(f.severity))


def gate_tripped(findings, fail_on):
    """Findings at or above `fail_on` ("never" disables the gate)."""
    if fail_on == "never":
        return []
    threshold = severity_rank(fail_on)
    return [f for f in findings if severity_rank(f.severity) >= threshold]
