"""Layout overhead: Transpose nodes, and Transpose pairs wrapping Conv/Pool.

Converters from channels-last frameworks (TensorFlow, TFLite, Keras) keep the
model's NHWC interface and wrap every Conv/Pool, which ONNX defines as NCHW,
in Transpose(NHWC->NCHW) ... Transpose(NCHW->NHWC). ORT's transpose optimizer
cancels many adjacent pairs; what it cannot cancel is a full tensor copy per run.
"""
from .graph import GraphIndex, is_default_domain, iter_nodes

SPATIAL_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
               "GlobalMaxPool", "LpPool"}
# Layout-agnostic ops a converter may leave between a Conv and its closing Transpose.
PASS_THROUGH_OPS = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "Add", "Mul",
                    "BatchNormalization", "Identity", "Pad"}
MAX_PASS_THROUGH = 4


def to_channels_first(perm):
    """[0, r-1, 1, ..., r-2]: NHWC -> NCHW for any rank >= 3."""
    rank = len(perm)
    return rank >= 3 and list(perm) == [0, rank - 1] + list(range(1, rank - 1))


def to_channels_last(perm):
    """[0, 2, ..., r-1, 1]: NCHW -> NHWC."""
    rank = len(perm)
    return rank >= 3 and list(perm) == [0] + list(range(2, rank)) + [1]


def _perm(node):
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return []


def _is_transpose(node, perm_test):
    return node is not None and node.op_type == "Transpose" and is_default_domain(node) \
        and perm_test(_perm(node))


def _opening_transpose(index, node):
    """The NHWC->NCHW Transpose feeding `node`, through up to MAX_PASS_THROUGH layout-agnostic ops."""
    current = node
    for _ in range(MAX_PASS_THROUGH + 1):
        if not current.input:
            return None
        producer = index.producer.get(current.input[0])
        if _is_transpose(producer, to_channels_first):
            return producer
        if producer is None or not is_default_domain(producer) or producer.op_type not in PASS_THROUGH_OPS:
            return None
        current = producer
    return None


def _closing_transpose(index, node):
    """The NCHW->NHWC Transpose reading `node`'s output, through up to MAX_PASS_THROUGH ops."""
    current = node
    for _ in range(MAX_PASS_THROUGH + 1):
        consumer = index.sole_consumer(current)
        if _is_transpose(consumer, to_channels_last):
            return consumer
        if consumer is None or not is_default_domain(consumer) or consumer.op_type not in PASS_THROUGH_OPS:
            return None
        current = consumer
    return None


def wrapped_spatial_ops(graph):
    """[(spatial node, opening Transpose, closing Transpose)] for NHWC-wrapped Conv/Pool nodes."""
    index = GraphIndex(graph)
    found = []
    for node in index.nodes:
        if node.op_type not in SPATIAL_OPS or not is_default_domain(node):
            continue
        opening = _opening_transpose(index, node)
        closing = _closing_transpose(index, node) if opening is not None else None
        if closing is not None:
            found.append((node, opening, closing))
    return found


def layout_stats(graph, total_nodes):
    transposes = sum(1 for n in iter_nodes(graph) if n.op_type == "Transpose" and is_default_domain(n))
    wrapped = wrapped_spatial_ops(graph)
    wrapping = {id(t) for _, opening, closing in wrapped for t in (opening, closing)}
    return {
        "transposes": transposes,
        "transpose_share": round(transposes / total_nodes, 4) if total_nodes else 0.0,
        "wrapped_spatial_ops": len(wrapped),
        "wrapping_transposes": len(wrapping),
        "wrapped_examples": [f"{node.op_type} ({node.name or node.output[0]})" for node, _, _ in wrapped[:5]],
    }
