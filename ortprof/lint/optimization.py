"""Running ORT's graph optimizer at each level and recognising fusions it should have made.

Each level is applied by creating a CPU session with `optimized_model_filepath`:
ORT writes the graph it would execute, which we read back and count. Weights
of 1 KiB and more go to an external file next to it, so even models above
protobuf's 2 GB limit can be written and the graph read back cheaply; that
file is a symlink to /dev/null because the weights are never read back.
"""
import os
from dataclasses import dataclass
from typing import Optional

import onnx

from ..errors import InputError
from .graph import GraphIndex, is_default_domain, node_count, op_histogram
from .layout import layout_stats
from .ort_messages import ort_load_error

# Our level names -> onnxruntime.GraphOptimizationLevel member names.
LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


@dataclass
class ModelSource:
    """What ORT loads: a file, or serialized bytes whose external data sits in `external_dir`."""
    path: str
    data: Optional[bytes] = None
    external_dir: Optional[str] = None


def optimize(source, level, out_path):
    """The graph ORT produces at `level` for the CPU provider, read back from `out_path`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    options.log_severity_level = 3
    options.intra_op_num_threads = 1  # only the optimizer runs; no need for a pool
    options.optimized_model_filepath = out_path
    data_name = os.path.basename(out_path) + ".data"
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", data_name)
    try:
        # Only the graph is read back: the weights ORT writes may go to /dev/null,
        # which saves a model-sized write per level.
        os.symlink(os.devnull, os.path.join(os.path.dirname(out_path), data_name))
    except OSError:
        pass  # then ORT writes a real file in the temporary directory
    if source.data is not None:
        # Bytes have no location: tell ORT where their external weights live.
        options.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", source.external_dir or ".")
    try:
        ort.InferenceSession(source.data if source.data is not None else source.path,
                             options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind exception types
        raise InputError(ort_load_error(exc, source.path)) from None
    try:
        return onnx.load(out_path, load_external_data=False)
    except Exception as exc:
        raise InputError(f"ONNX Runtime wrote an unreadable optimized model for {source.path}: {exc}") from None


def tensor_ranks(model):
    """{tensor name: rank} from ONNX shape inference on a (small, weight-less) model proto."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # shape inference is a bonus; unknown ops or huge protos just give no ranks
        inferred = model
    ranks = {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        ttype = value.type.tensor_type
        if value.type.HasField("tensor_type") and ttype.HasField("shape"):
            ranks[value.name] = len(ttype.shape.dim)
    for tensor in graph.initializer:
        ranks[tensor.name] = len(tensor.dims)
    return ranks


# --- fusion opportunities -------------------------------------------------
# Patterns ORT's CPU optimizer fuses or folds when their weights are constant.
# Counting them before and after level "all" tells whether the optimizer did
# its job; survivors usually mean the weights were not constant.

CONV_ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "HardSigmoid"}
LAYERNORM_CHAIN = [{"ReduceMean"}, {"Sub"}, {"Pow", "Mul"}, {"ReduceMean"}, {"Add"}, {"Sqrt"}, {"Div"}]
GELU_CHAIN = [{"Div", "Mul"}, {"Erf"}, {"Add"}, {"Mul"}]
def _onnx_nodes(index, op_types):
    return [n for n in index.nodes if is_default_domain(n) and n.op_type in op_types]


def _anchor(node):
    # Output names are unique and ORT keeps them on nodes it leaves alone, so they
    # identify a pattern across optimization levels (node names may be empty).
    return node.output[0]


def _conv_batchnorm(index, ranks):
    found = set()
    for conv in _onnx_nodes(index, {"Conv"}):
        bn = index.sole_consumer(conv)
        if bn is not None and bn.op_type == "BatchNormalization" and is_default_domain(bn) \
                and all(index.is_constant(name) for name in bn.input[1:5]):
            found.add(_anchor(conv))
    return found


def _conv_activation(index, ranks):
    found = set()
    for conv in _onnx_nodes(index, {"Conv"}):
        act = index.sole_consumer(conv)
        if act is not None and act.op_type in CONV_ACTIVATIONS and is_default_domain(act) \
                and all(index.is_constant(name) for name in act.input[1:] if name):
            found.add(_anchor(conv))
    return found


def _matmul_bias(index, ranks):
    # ORT turns MatMul+Add into Gemm only for 2-D activations with a constant bias.
    found = set()
    for matmul in _onnx_nodes(index, {"MatMul"}):
        add = index.sole_consumer(matmul)
        if add is None or add.op_type != "Add" or not is_default_domain(add):
            continue
        bias = [name for name in add.input if name != matmul.output[0]]
        if ranks.get(matmul.input[0]) == 2 and len(bias) == 1 and index.is_constant(bias[0]):
            found.add(_anchor(matmul))
    return found


def _follows(index, node, steps):
    """True when a consumer path from `node` has op types matching `steps` in order."""
    if not steps:
        return True
    return any(is_default_domain(nxt) and nxt.op_type in steps[0] and _follows(index, nxt, steps[1:])
               for nxt in index.next_nodes(node))


def _layernorm(index, ranks):
    return {_anchor(node) for node in _onnx_nodes(index, LAYERNORM_CHAIN[0])
            if _follows(index, node, LAYERNORM_CHAIN[1:])}


def _gelu(index, ranks):
    # Div/Mul -> Erf -> Add -> Mul with constant 1/sqrt(2), 1 and 0.5 is the erf Gelu.
    found = set()
    for erf in _onnx_nodes(index, {"Erf"}):
        scale = index.producer.get(erf.input[0])
        if scale is None or scale.op_type not in GELU_CHAIN[0] or \
                not any(index.is_constant(name) for name in scale.input):
            continue
        if _follows(index, erf, GELU_CHAIN[2:]):
            found.add(_anchor(erf))
    return found


def _constant_foldable(index, ranks):
    # A foldable node feeding a graph output stays: ORT does not fold graph outputs away.
    return {_anchor(node) for node in index.foldable
            if not any(name in index.graph_outputs for name in node.output)}


FUSION_PATTERNS = {
    "conv+batchnorm": _conv_batchnorm,
    "conv+activation": _conv_activation,
    "matmul+bias": _matmul_bias,
    "layernorm": _layernorm,
    "gelu": _gelu,
    "constant-foldable": _constant_foldable,
}


def fusion_anchors(model, ranks):
    """{pattern: output names of the nodes anchoring each instance} in the top-level graph."""
    index = GraphIndex(model.graph)
    return {name: find(index, ranks) for name, find in FUSION_PATTERNS.items()}


def level_stats(model, ranks, reference=None):
    """Counts for one optimized graph; with `reference` (the unoptimized graph's anchors),
    "unfused_patterns" counts only patterns of the original model still present, not ones that
    ORT's own rewrites happen to create."""
    nodes = node_count(model.graph)
    anchors = fusion_anchors(model, ranks)
    if reference is not None:
        anchors = {name: found & reference.get(name, set()) for name, found in anchors.items()}
    stats = {
        "nodes": nodes,
        "ops": op_histogram(model.graph),
        "layout": layout_stats(model.graph, nodes),
        "unfused_patterns": {name: len(found) for name, found in anchors.items()},
    }
    return stats, anchors


def run_levels(source, workdir, progress=None):
    """({level: stats}, context) for every optimization level; the context (tensor ranks and
    the unoptimized graph's fusion anchors) serves later measurements of model variants."""
    results = {}
    context = None
    for level in LEVELS:
        if progress:
            progress(f"optimizing at level {level}")
        optimized = optimize(source, level, os.path.join(workdir, f"{level}.onnx"))
        if context is None:
            # Tensor names survive optimization, so ranks from the plain graph serve every level.
            ranks = tensor_ranks(optimized)
            results[level], anchors = level_stats(optimized, ranks)
            context = (ranks, anchors)
        else:
            results[level], _ = level_stats(optimized, *context)
    return results, context


def all_level_stats(source, workdir, name, context):
    """Stats of `source` at level "all" (used to measure a model variant)."""
    stats, _ = level_stats(optimize(source, "all", os.path.join(workdir, f"{name}.onnx")), *context)
    return stats
