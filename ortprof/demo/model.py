"""Build the demo encoder with `onnx`: all-MiniLM-L6-v2's shape, synthetic weights.

No download: weights are random (fixed seed) and the model is cached under the
ortprof cache directory, one file per size. The graph uses the same op pattern
a transformers export has (Gather embeddings, LayerNormalization, MatMul+Add
projections, Softmax attention, Erf-based GELU), so ORT's fusions apply as they
would on the real model.
"""
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class EncoderShape:
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int = 30522
    max_positions: int = 512
    labels: int = 2


SHAPES = {
    "small": EncoderShape(layers=6, hidden=384, heads=12, ffn=1536),     # all-MiniLM-L6-v2
    "large": EncoderShape(layers=24, hidden=1024, heads=16, ffn=4096),   # bert-large
    # Not offered on the CLI; keeps tests of the builder itself fast.
    "tiny": EncoderShape(layers=2, hidden=64, heads=4, ffn=128, vocab=1000),
}

# IR 8 / opset 17: loadable by every ORT from 1.15 on (LayerNormalization needs 17).
IR_VERSION = 8
OPSET = 17


def cache_dir():
    root = os.environ.get("ORTPROF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ortprof")
    return Path(root)


def parameter_count(shape):
    per_layer = 4 * (shape.hidden * shape.hidden + shape.hidden) \
        + 2 * shape.hidden * shape.ffn + shape.ffn + shape.hidden + 4 * shape.hidden
    embeddings = (shape.vocab + shape.max_positions + 2) * shape.hidden + 2 * shape.hidden
    return embeddings + shape.layers * per_layer + shape.hidden * shape.labels + shape.labels


class _GraphBuilder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, seed):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.rng = np.random.default_rng(seed)
        self.nodes, self.initializers = [], []
        self._count = 0

    def name(self, prefix):
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, prefix, array):
        name = self.name(prefix)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, prefix, *dims):
        return self.const(prefix, (self.rng.standard_normal(dims) * 0.02).astype(np.float32))

    def op(self, op_type, inputs, prefix=None, **attrs):
        out = self.name(prefix or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x, fan_in, fan_out):
        return self.op("Add", [self.op("MatMul", [x, self.weight("w", fan_in, fan_out)]),
                               self.const("b", np.zeros(fan_out, np.float32))])

    def layer_norm(self, x, width):
        return self.op("LayerNormalization",
                       [x, self.const("gamma", np.ones(width, np.float32)),
                        self.const("beta", np.zeros(width, np.float32))], axis=-1, epsilon=1e-12)


def build_encoder(shape, seed=0):
    """Return an onnx.ModelProto for an encoder of `shape`."""
    from onnx import TensorProto, helper

    g = _GraphBuilder(seed)
    head_dim = shape.hidden // shape.heads
    ids, mask, types = "input_ids", "attention_mask", "token_type_ids"

    # Embeddings: word + position + token type, then LayerNorm.
    seq_len = g.op("Gather", [g.op("Shape", [ids]), g.const("one", np.array(1, np.int64))], axis=0)
    positions = g.op("Range", [g.const("zero", np.array(0, np.int64)), seq_len,
                               g.const("step", np.array(1, np.int64))])
    x = g.op("Add", [g.op("Gather", [g.weight("word_emb", shape.vocab, shape.hidden), ids]),
                     g.op("Gather", [g.weight("pos_emb", shape.max_positions, shape.hidden), positions])])
    x = g.op("Add", [x, g.op("Gather", [g.weight("type_emb", 2, shape.hidden), types])])
    x = g.layer_norm(x, shape.hidden)

    # Additive attention bias from the mask: (1 - mask) * -10000, shape [B, 1, 1, S].
    mask_f = g.op("Cast", [g.op("Unsqueeze", [mask, g.const("axes", np.array([1, 2], np.int64))])],
                  to=TensorProto.FLOAT)
    bias = g.op("Mul", [g.op("Sub", [g.const("one_f", np.array(1.0, np.float32)), mask_f]),
                        g.const("neg", np.array(-10000.0, np.float32))])

    split_heads = g.const("split", np.array([0, 0, shape.heads, head_dim], np.int64))
    merge_heads = g.const("merge", np.array([0, 0, shape.hidden], np.int64))
    scale = g.const("scale", np.array(np.sqrt(head_dim), np.float32))

    for _ in range(shape.layers):
        def heads(t, perm):
            return g.op("Transpose", [g.op("Reshape", [t, split_heads])], perm=perm)
        q = heads(g.linear(x, shape.hidden, shape.hidden), [0, 2, 1, 3])
        k = heads(g.linear(x, shape.hidden, shape.hidden), [0, 2, 3, 1])
        v = heads(g.linear(x, shape.hidden, shape.hidden), [0, 2, 1, 3])
        scores = g.op("Add", [g.op("Div", [g.op("MatMul", [q, k]), scale]), bias])
        context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), merge_heads])
        x = g.layer_norm(g.op("Add", [g.linear(context, shape.hidden, shape.hidden), x]), shape.hidden)
        # GELU written out with Erf, as exporters emit it (ORT fuses it back).
        h = g.linear(x, shape.hidden, shape.ffn)
        erf = g.op("Erf", [g.op("Div", [h, g.const("sqrt2", np.array(np.sqrt(2.0), np.float32))])])
        gelu = g.op("Mul", [g.op("Mul", [h, g.op("Add", [erf, g.const("one_g", np.array(1.0, np.float32))])]),
                            g.const("half", np.array(0.5, np.float32))])
        x = g.layer_norm(g.op("Add", [g.linear(gelu, shape.ffn, shape.hidden), x]), shape.hidden)

    first_token = g.op("Gather", [x, g.const("cls", np.array(0, np.int64))], axis=1)
    g.linear(first_token, shape.hidden, shape.labels)
    g.nodes[-1].output[0] = "logits"   # the final Add names the graph output

    int_input = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
    graph = helper.make_graph(
        g.nodes, "ortprof_demo_encoder", [int_input(ids), int_input(mask), int_input(types)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", shape.labels])],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="ortprof-demo")
    model.ir_version = IR_VERSION
    return model


def demo_model_path(size="small"):
    """Path of the cached demo model of `size`, built on first use."""
    if size not in SHAPES:
        raise ValueError(f"unknown demo size {size!r}; choose from {', '.join(SHAPES)}")
    path = cache_dir() / "models" / f"demo-encoder-{size}-v1.onnx"
    if path.exists():
        return path
    import onnx
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_encoder(SHAPES[size])
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    # The large model exceeds protobuf's 2 GB limit only with external data off; keep it external.
    external = parameter_count(SHAPES[size]) * 4 > 1_500_000_000
    onnx.save_model(model, str(tmp), save_as_external_data=external,
                    location=path.name + ".data" if external else None)
    os.replace(tmp, path)
    return path
