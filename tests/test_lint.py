"""ortprof lint: small models built with onnx that each show (or do not show) one problem.

Every model is IR 8 / opset 17 so ORT 1.15 and 1.31 both load it. ORT itself
runs the optimizer and the placement probe; nothing of ORT is mocked.
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from ortprof.cli import cli
from ortprof.errors import EXIT_GATE, EXIT_INPUT, InputError, OrtprofError
from ortprof.lint import checks, layout, placement
from ortprof.lint.initializers import initializer_inputs
from ortprof.lint.model_facts import load_model, model_facts
from ortprof.lint.optimization import fusion_anchors, level_stats, tensor_ranks
from ortprof.lint.run import SCHEMA, lint_model

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
ORTPROF = os.path.join(os.path.dirname(sys.executable), "ortprof")
RNG = np.random.default_rng(7)


# --- model builders ---------------------------------------------------------

def _weight(name, shape):
    return numpy_helper.from_array(RNG.random(shape).astype(np.float32) + 0.5, name)


def _scalar(name, value):
    return numpy_helper.from_array(np.array(value, np.float32), name)


def _model(nodes, inputs, initializers=(), initializers_as_inputs=False, output_shape=None):
    graph_inputs = list(inputs)
    if initializers_as_inputs:
        graph_inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers]
    output = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, output_shape)
    graph = helper.make_graph(nodes, "g", graph_inputs, [output], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ortprof-tests")
    model.ir_version = 8
    return model


def _save(model, directory, name):
    path = os.path.join(str(directory), name)
    onnx.save(model, path)
    return path


def conv_bn_relu(initializers_as_inputs=False, channels=4):
    """Conv -> BatchNormalization -> Relu: ORT folds the BN into the Conv and fuses the Relu."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    weights = [_weight("W", (channels, 3, 3, 3)), _weight("B", (channels,)), _weight("scale", (channels,)),
               _weight("bias", (channels,)), _weight("mean", (channels,)), _weight("var", (channels,))]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["y"], name="relu"),
    ]
    return _model(nodes, [x], weights, initializers_as_inputs)


def nhwc_conv():
    """A converter-style channels-last Conv: Transpose -> Conv -> Relu -> Transpose."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 3])
    nodes = [
        helper.make_node("Transpose", ["x"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Transpose", ["r"], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Sin", ["nhwc"], ["y"], name="sin"),
    ]
    return _model(nodes, [x], [_weight("W", (4, 3, 3, 3)), _weight("B", (4,))])


def unfusable_chain():
    """Element-wise ops ORT has no fusion for."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])
    nodes = [helper.make_node(op, [src], [dst], name=op.lower())
             for op, src, dst in (("Sin", "x", "a"), ("Cos", "a", "b"), ("Abs", "b", "c"), ("Neg", "c", "y"))]
    return _model(nodes, [x])


def matmul_bias_relu(initializers_as_inputs=False):
    """2-D MatMul + bias + Relu: fused into one FusedGemm at level extended."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "B"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    return _model(nodes, [x], [_weight("W", (16, 16)), _weight("B", (16,))], initializers_as_inputs)


def gelu_erf(initializers_as_inputs=False):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 16])
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"], name="div"),
             helper.make_node("Erf", ["d"], ["e"], name="erf"),
             helper.make_node("Add", ["e", "one"], ["p"], name="add"),
             helper.make_node("Mul", ["x", "p"], ["q"], name="mul"),
             helper.make_node("Mul", ["q", "half"], ["y"], name="mul_half")]
    weights = [_scalar("sqrt2", 1.4142135), _scalar("one", 1.0), _scalar("half", 0.5)]
    return _model(nodes, [x], weights, initializers_as_inputs)


def layernorm_decomposed():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 16])
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
             helper.make_node("Sub", ["x", "mu"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["v"], axes=[-1]),
             helper.make_node("Add", ["v", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["d", "sd"], ["n"]),
             helper.make_node("Mul", ["n", "gamma"], ["g"]),
             helper.make_node("Add", ["g", "beta"], ["y"])]
    weights = [_scalar("two", 2.0), _scalar("eps", 1e-5), _weight("gamma", (16,)), _weight("beta", (16,))]
    return _model(nodes, [x], weights)


def finding_ids(report):
    return [f.id for f in report.findings]


def finding(report, finding_id):
    return next(f for f in report.findings if f.id == finding_id)


# --- fusion patterns and layout, on the graphs themselves -------------------

@pytest.mark.parametrize("build, pattern", [
    (conv_bn_relu, "conv+batchnorm"),
    (matmul_bias_relu, "matmul+bias"),
    (gelu_erf, "gelu"),
    (layernorm_decomposed, "layernorm"),
])
def test_fusion_patterns_are_recognised(build, pattern):
    model = build()
    found = fusion_anchors(model, tensor_ranks(model))
    assert len(found[pattern]) == 1


def test_weights_computed_from_constants_count_as_constant():
    # BatchNormalization parameters made by ConstantOfShape (as old caffe2 exports do) fold to constants.
    model = conv_bn_relu()
    del model.graph.initializer[2:]  # drop scale, bias, mean, var
    model.graph.initializer.append(numpy_helper.from_array(np.array([4], np.int64), "bn_shape"))
    for name in ("scale", "bias", "mean", "var"):
        model.graph.node.insert(0, helper.make_node("ConstantOfShape", ["bn_shape"], [name],
                                                    value=numpy_helper.from_array(np.array([1.0], np.float32))))
    found = fusion_anchors(model, tensor_ranks(model))
    assert found["conv+batchnorm"] == {"c"} and found["constant-foldable"] == {"scale", "bias", "mean", "var"}


def test_no_fusion_patterns_in_an_unfusable_chain():
    model = unfusable_chain()
    assert not any(fusion_anchors(model, tensor_ranks(model)).values())


def test_only_patterns_of_the_original_graph_count_as_unfused():
    # ORT's own rewrites can create foldable nodes it never folds; they are not the model's fault.
    model = conv_bn_relu()
    stats, _ = level_stats(model, tensor_ranks(model), reference={"conv+batchnorm": set()})
    assert stats["unfused_patterns"]["conv+batchnorm"] == 0
    stats, _ = level_stats(model, tensor_ranks(model), reference={"conv+batchnorm": {"c"}})
    assert stats["unfused_patterns"]["conv+batchnorm"] == 1


def test_matmul_bias_needs_a_2d_activation():
    # ORT only makes a Gemm out of MatMul+Add for 2-D inputs; a 3-D MatMul must not count.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 16])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "B"], ["y"])]
    model = _model(nodes, [x], [_weight("W", (16, 16)), _weight("B", (16,))])
    assert fusion_anchors(model, tensor_ranks(model))["matmul+bias"] == set()


def test_channel_permutations():
    assert layout.to_channels_first([0, 3, 1, 2]) and layout.to_channels_last([0, 2, 3, 1])
    assert layout.to_channels_first([0, 4, 1, 2, 3]) and layout.to_channels_last([0, 2, 3, 4, 1])
    assert not layout.to_channels_first([0, 2, 3, 1]) and not layout.to_channels_last([0, 3, 1, 2])
    assert not layout.to_channels_first([1, 0])


def test_wrapped_conv_is_found_only_in_the_nhwc_model():
    wrapped = layout.wrapped_spatial_ops(nhwc_conv().graph)
    assert [(node.name, opening.name, closing.name) for node, opening, closing in wrapped] == \
        [("conv", "to_nchw", "to_nhwc")]
    assert layout.wrapped_spatial_ops(conv_bn_relu().graph) == []


# --- placement log parser ----------------------------------------------------

def _fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


@pytest.mark.parametrize("name", ["placement-cpu-ort-1.31.1.txt", "placement-cpu-ort-1.15.1.txt",
                                  "placement-azure-cpu-ort-1.31.1.txt"])
def test_parse_real_cpu_placement_logs(name):
    # Captured from `python -m ortprof.lint.placement` on this machine (ORT 1.31.1 and 1.15.1).
    parsed = placement.parse_placement_log(_fixture(name))
    assert parsed.found
    assert parsed.node_counts == {"CPUExecutionProvider": 7}
    assert parsed.nodes == {"CPUExecutionProvider": []}
    assert parsed.memcpy_nodes() == [] and parsed.forced_cpu == [] and parsed.missing_kernels == []


def test_parse_multi_provider_placement_log():
    # Hand-written in ORT 1.31's format (messages of session_state.cc VerifyEachNodeIsAssignedToAnEp,
    # transformer_memcpy.cc AddCopyNode, fallback_cpu_capability.cc, cuda_execution_provider.cc
    # GetCapability); line numbers illustrative. No CUDA machine here to capture one.
    parsed = placement.parse_placement_log(_fixture("placement-cuda-cpu-ort-format.txt"))
    assert parsed.node_counts == {"CUDAExecutionProvider": 7, "CPUExecutionProvider": 4}
    assert parsed.nodes["CPUExecutionProvider"] == [
        ("Gather", "/embeddings/Gather"), ("Unsqueeze", "/embeddings/Unsqueeze"),
        ("Concat", "/embeddings/Concat"), ("Unique", "/encoder/Unique")]
    assert [(op, name) for _, op, name in parsed.memcpy_nodes()] == \
        [("MemcpyToHost", "Memcpy"), ("MemcpyFromHost", "Memcpy_token_1")]
    assert parsed.forced_cpu == ["/embeddings/Gather", "/embeddings/Unsqueeze", "/embeddings/Concat"]
    assert parsed.missing_kernels == [("CUDA", "Unique", "/encoder/Unique")]
    assert [t for _, t, _ in parsed.memcpy_added] == ["/encoder/MatMul_output_0", "/encoder/Unique_output_0"]


def test_parser_ignores_unrelated_text_and_keeps_the_last_report():
    text = ("no placement here\n"
            "[V:onnxruntime:, session_state.cc:1 F] Node placements\n"
            "[V:onnxruntime:, session_state.cc:2 F]  All nodes placed on [CPUExecutionProvider]. Number of nodes: 3\n"
            "garbage (not a node)\n"
            # printed without the logger prefix, as some builds do through std::cout
            "Node placements\n"
            " Node(s) placed on [XnnpackExecutionProvider]. Number of nodes: 1\n"
            "  Conv (conv_0)\n"
            " Node(s) placed on [CPUExecutionProvider]. Number of nodes: 1\n"
            "  Softmax ()\n")
    parsed = placement.parse_placement_log(text)
    assert parsed.node_counts == {"XnnpackExecutionProvider": 1, "CPUExecutionProvider": 1}
    assert parsed.nodes["CPUExecutionProvider"] == [("Softmax", "")]
    assert not placement.parse_placement_log("nothing\nat all\n").found


def _placement_report(text, requested, session_providers):
    return placement.placement_report(requested, placement.parse_placement_log(text), session_providers)


def test_ep_fallback_from_multi_provider_log():
    report = _placement_report(_fixture("placement-cuda-cpu-ort-format.txt"),
                               ["CUDAExecutionProvider", "CPUExecutionProvider"],
                               ["CUDAExecutionProvider", "CPUExecutionProvider"])
    found = checks.check_ep_fallback(report)
    assert found.severity == "warning"  # Unique has no CUDA kernel: real work on the CPU
    assert found.evidence["unexpected_cpu_nodes"] == ["Unique (/encoder/Unique)"]
    assert found.evidence["memcpy_nodes"] == 2 and found.evidence["forced_cpu_nodes"] == 3
    assert found.evidence["missing_kernels"] == ["Unique"]


def test_ep_fallback_of_shape_arithmetic_only_is_info():
    text = _fixture("placement-cuda-cpu-ort-format.txt")
    text = "\n".join(line for line in text.splitlines() if "Unique" not in line)
    text = text.replace("[CPUExecutionProvider]. Number of nodes: 4", "[CPUExecutionProvider]. Number of nodes: 3")
    report = _placement_report(text, ["CUDAExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"])
    found = checks.check_ep_fallback(report)
    assert found.severity == "info" and found.evidence["unexpected_cpu_nodes"] == []


def test_no_ep_fallback_when_only_cpu_was_asked_for():
    report = _placement_report(_fixture("placement-cpu-ort-1.31.1.txt"), ["CPUExecutionProvider"],
                               ["CPUExecutionProvider"])
    assert checks.check_ep_fallback(report) is None


def test_provider_names_resolve():
    resolved, missing = placement.resolve_providers(["cuda", "CPUExecutionProvider", "cpu"])
    assert resolved == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ("CUDAExecutionProvider" in missing) == ("CUDAExecutionProvider" not in ort.get_available_providers())
    with pytest.raises(InputError, match="unknown execution provider 'warp-drive'"):
        placement.resolve_providers(["warp-drive"])


# --- whole lint runs on real ORT --------------------------------------------

@pytest.mark.live
def test_initializers_in_inputs_block_fusion_and_are_reported(tmp_path):
    path = _save(conv_bn_relu(initializers_as_inputs=True), tmp_path, "m.onnx")
    report = lint_model(path)
    assert finding_ids(report) == ["initializer-inputs", "unoptimized-graph"]
    init = finding(report, "initializer-inputs")
    assert init.severity == "warning"
    assert init.evidence["names"] == ["W", "B", "scale", "bias", "mean", "var"]
    # ORT could not fold the BatchNormalization; without the inputs it can.
    assert report.levels["all"]["ops"].get("BatchNormalization") == 1
    assert init.evidence["nodes_at_all_without_them"] < init.evidence["nodes_at_all"]
    unopt = finding(report, "unoptimized-graph")
    assert unopt.evidence["patterns"]["conv+batchnorm"] == {"before": 1, "after": 1}


@pytest.mark.live
def test_a_model_that_fuses_has_no_findings(tmp_path):
    report = lint_model(_save(conv_bn_relu(), tmp_path, "m.onnx"))
    assert report.findings == []
    assert report.levels["disabled"]["nodes"] == 3
    assert report.levels["all"]["nodes"] < 3
    assert "BatchNormalization" not in report.levels["basic"]["ops"]
    assert sum(report.levels["all"]["unfused_patterns"].values()) == 0


@pytest.mark.live
def test_matmul_bias_model_fuses_per_level(tmp_path):
    report = lint_model(_save(matmul_bias_relu(), tmp_path, "m.onnx"))
    assert report.findings == []
    assert report.levels["disabled"]["ops"] == {"Add": 1, "MatMul": 1, "Relu": 1}
    assert report.levels["basic"]["ops"] == {"Gemm": 1, "Relu": 1}
    assert report.levels["all"]["ops"] == {"com.microsoft:FusedGemm": 1}


@pytest.mark.live
def test_initializer_inputs_that_block_nothing_are_info(tmp_path):
    # ORT fuses MatMul+Add into Gemm whether or not the weights are constant.
    report = lint_model(_save(matmul_bias_relu(initializers_as_inputs=True), tmp_path, "m.onnx"))
    assert finding_ids(report) == ["initializer-inputs"]
    assert finding(report, "initializer-inputs").severity == "info"


@pytest.mark.live
def test_gelu_with_initializer_inputs_stays_unfused(tmp_path):
    blocked = lint_model(_save(gelu_erf(initializers_as_inputs=True), tmp_path, "blocked.onnx"))
    assert "unoptimized-graph" in finding_ids(blocked)
    healthy = lint_model(_save(gelu_erf(), tmp_path, "healthy.onnx"))
    assert healthy.findings == []
    assert healthy.levels["all"]["ops"] == {"com.microsoft:Gelu": 1}


@pytest.mark.live
def test_unfusable_chain_is_not_flagged(tmp_path):
    report = lint_model(_save(unfusable_chain(), tmp_path, "m.onnx"))
    assert report.findings == []
    assert {level: stats["nodes"] for level, stats in report.levels.items()} == \
        {"disabled": 4, "basic": 4, "extended": 4, "all": 4}


@pytest.mark.live
def test_transpose_wrapped_conv_is_reported(tmp_path):
    report = lint_model(_save(nhwc_conv(), tmp_path, "m.onnx"))
    assert finding_ids(report) == ["nhwc-transposes"]
    found = finding(report, "nhwc-transposes")
    assert found.evidence["wrapped_spatial_ops"] == 1 and found.evidence["wrapping_transposes"] == 2
    assert found.evidence["transposes"]["disabled"] == 2
    assert report.levels["disabled"]["layout"]["transpose_share"] == pytest.approx(2 / 5, abs=1e-3)


def test_old_ir_initializer_inputs_are_not_flagged():
    model = matmul_bias_relu(initializers_as_inputs=True)
    model.ir_version = 3  # before IR 4 every initializer had to be an input
    assert initializer_inputs(model) == []


@pytest.mark.live
def test_model_facts(tmp_path):
    model = conv_bn_relu(channels=16)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    os.makedirs(tmp_path / "ext")
    path = str(tmp_path / "ext" / "m.onnx")
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=1024)
    facts = lint_model(path).model
    assert facts["ir_version"] == 8 and facts["opsets"] == {"ai.onnx": 17}
    assert facts["parameters"] == 16 * 3 * 3 * 3 + 5 * 16
    assert facts["parameter_bytes"] == facts["parameters"] * 4
    assert facts["inputs"] == [{"name": "x", "type": "float", "shape": ["batch", 3, 8, 8], "dynamic_axes": [0]}]
    assert facts["dynamic_inputs"] == ["x"]
    assert facts["external_data"]["tensors"] == 1  # only W reaches the 1 KiB threshold
    assert facts["external_data"]["files"] == {"m.onnx.data": 16 * 3 * 3 * 3 * 4}
    assert facts["custom_domains"] == []


def test_custom_domains_are_listed():
    model = unfusable_chain()
    model.graph.node.append(helper.make_node("Tokenize", ["y"], ["t"], domain="ai.onnx.contrib"))
    model.opset_import.append(helper.make_opsetid("ai.onnx.contrib", 1))
    facts = model_facts(model, __file__, {})
    assert facts["custom_domains"] == ["ai.onnx.contrib"]


# --- --fix -------------------------------------------------------------------

def _run(path, feed):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


@pytest.mark.live
def test_fix_writes_a_model_without_initializer_inputs(tmp_path):
    path = _save(conv_bn_relu(initializers_as_inputs=True), tmp_path, "m.onnx")
    out = str(tmp_path / "fixed.onnx")
    report = lint_model(path, fix_path=out)
    assert report.fix["written"] and report.fix["removed_inputs"] == ["W", "B", "scale", "bias", "mean", "var"]
    assert report.fix["nodes_at_all_after"] < report.fix["nodes_at_all_before"]
    fixed = onnx.load(out)
    assert [i.name for i in fixed.graph.input] == ["x"]
    feed = {"x": RNG.random((1, 3, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(_run(out, feed), _run(path, feed), rtol=1e-5, atol=1e-5)
    assert lint_model(out).findings == []


@pytest.mark.live
def test_fix_keeps_external_data_external(tmp_path):
    os.makedirs(tmp_path / "src")
    path = str(tmp_path / "src" / "m.onnx")
    onnx.save(conv_bn_relu(initializers_as_inputs=True, channels=16), path, save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    out = str(tmp_path / "fixed.onnx")
    report = lint_model(path, fix_path=out)
    assert report.model["external_data"]["files"] == {"weights.bin": os.path.getsize(tmp_path / "src" / "weights.bin")}
    assert report.fix["external_data"] == "fixed.onnx.data"
    assert os.path.getsize(tmp_path / "fixed.onnx.data") >= 16 * 3 * 3 * 3 * 4
    assert report.initializer_inputs["nodes_at_all_without_them"] == report.fix["nodes_at_all_after"]
    feed = {"x": RNG.random((1, 3, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(_run(out, feed), _run(path, feed), rtol=1e-5, atol=1e-5)


@pytest.mark.live
def test_fix_with_nothing_to_fix_writes_nothing(tmp_path):
    out = tmp_path / "fixed.onnx"
    report = lint_model(_save(conv_bn_relu(), tmp_path, "m.onnx"), fix_path=str(out))
    assert report.fix["written"] is False and not out.exists()


def test_fix_refuses_to_overwrite_the_model(tmp_path):
    path = _save(conv_bn_relu(initializers_as_inputs=True), tmp_path, "m.onnx")
    with pytest.raises(InputError, match="overwrite the model itself"):
        lint_model(path, fix_path=path)


# --- placement, live on this machine ------------------------------------------

@pytest.mark.live
def test_live_cpu_placement_matches_the_optimized_graph(tmp_path):
    path = _save(nhwc_conv(), tmp_path, "m.onnx")
    parsed, session_providers, log = placement.probe_placement(path, ["CPUExecutionProvider"])
    assert session_providers == ["CPUExecutionProvider"]
    assert parsed.found and "VerifyEachNodeIsAssignedToAnEp" in log
    assert parsed.node_counts == {"CPUExecutionProvider": lint_model(path).levels["all"]["nodes"]}


@pytest.mark.skipif("AzureExecutionProvider" not in ort.get_available_providers(),
                    reason="needs a wheel with AzureExecutionProvider")
@pytest.mark.live
def test_live_fallback_when_the_preferred_provider_takes_nothing(tmp_path):
    # AzureExecutionProvider only runs its own remote-call ops: every node lands on the CPU.
    report = lint_model(_save(matmul_bias_relu(), tmp_path, "m.onnx"), providers=["azure"])
    assert finding_ids(report) == ["ep-fallback"]
    found = finding(report, "ep-fallback")
    assert found.severity == "warning"
    assert found.evidence["node_counts"] == {"CPUExecutionProvider": 1}


@pytest.mark.live
def test_unavailable_provider_is_skipped(tmp_path):
    missing = next(p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider", "DmlExecutionProvider")
                   if p not in ort.get_available_providers())
    report = lint_model(_save(conv_bn_relu(), tmp_path, "m.onnx"), providers=[missing])
    assert report.placement["skipped"].startswith(f"{missing} not available")
    assert report.findings == []


# --- command line ------------------------------------------------------------

@pytest.mark.live
def test_cli_json(tmp_path):
    path = _save(nhwc_conv(), tmp_path, "m.onnx")
    result = CliRunner().invoke(cli, ["lint", path, "--json", "--fail-on-severity", "never"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema"] == SCHEMA == "ortprof.lint/1"
    assert list(data["levels"]) == ["disabled", "basic", "extended", "all"]
    assert data["levels"]["disabled"]["ops"] == {"Transpose": 2, "Conv": 1, "Relu": 1, "Sin": 1}
    assert data["model"]["nodes"] == 5
    assert [f["id"] for f in data["findings"]] == ["nhwc-transposes"]
    assert set(data["findings"][0]) == {"id", "severity", "title", "evidence", "remedy", "tradeoff", "explanation"}


@pytest.mark.live
def test_cli_gate(tmp_path):
    path = _save(conv_bn_relu(initializers_as_inputs=True), tmp_path, "m.onnx")
    runner = CliRunner()
    gated = runner.invoke(cli, ["lint", path])
    assert isinstance(gated.exception, OrtprofError) and gated.exception.exit_code == EXIT_GATE
    assert "initializer-inputs" in gated.stdout and "unoptimized-graph" in gated.stdout
    assert runner.invoke(cli, ["lint", path, "--fail-on-severity", "critical"]).exit_code == 0
    clean = runner.invoke(cli, ["lint", _save(conv_bn_relu(), tmp_path, "clean.onnx"), "--fail-on-severity", "info"])
    assert clean.exit_code == 0 and "No findings." in clean.stdout


@pytest.mark.live
def test_cli_exit_code_of_a_tripped_gate(tmp_path):
    path = _save(conv_bn_relu(initializers_as_inputs=True), tmp_path, "m.onnx")
    child = subprocess.run([ORTPROF, "lint", path, "--json"], capture_output=True, text=True, timeout=120)
    assert child.returncode == EXIT_GATE
    assert json.loads(child.stdout)["schema"] == SCHEMA  # stdout stays pure JSON
    assert child.stderr.strip().splitlines() == [
        "ortprof: error: 2 finding(s) at or above warning: initializer-inputs, unoptimized-graph"]


@pytest.mark.live
def test_cli_text_with_placement_and_fix(tmp_path):
    path = _save(conv_bn_relu(initializers_as_inputs=True), tmp_path, "m.onnx")
    result = CliRunner().invoke(cli, ["lint", path, "--providers", "cpu", "--fix", str(tmp_path / "fixed.onnx"),
                                      "--fail-on-severity", "never"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # rich wraps at the terminal width
    assert "Execution providers" in text and "CPUExecutionProvider" in text
    assert "without 6 initializer inputs" in text and (tmp_path / "fixed.onnx").exists()


def test_cli_unknown_provider_is_an_input_error(tmp_path):
    result = CliRunner().invoke(cli, ["lint", _save(conv_bn_relu(), tmp_path, "m.onnx"), "--providers", "gpu9000"])
    assert isinstance(result.exception, InputError) and result.exception.exit_code == EXIT_INPUT


def _unknown_op_model():
    return _model([helper.make_node("FooBar", ["x"], ["y"], name="foo")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])])


def _custom_op_model():
    model = _model([helper.make_node("FooBar", ["x"], ["y"], name="foo", domain="my.ops")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])])
    model.opset_import.append(helper.make_opsetid("my.ops", 1))
    return model


def _write_bad_model(kind, directory):
    path = os.path.join(str(directory), "bad.onnx")
    good = onnx.ModelProto()
    good.CopyFrom(conv_bn_relu(channels=16))
    if kind == "text":
        with open(path, "w") as handle:
            handle.write("this is not a model\n")
    elif kind == "truncated":
        data = good.SerializeToString()
        with open(path, "wb") as handle:
            handle.write(data[: len(data) // 2])
    elif kind == "missing-external-data":
        onnx.save(good, path, save_as_external_data=True, location="bad.onnx.data", size_threshold=0)
        os.remove(os.path.join(str(directory), "bad.onnx.data"))
    elif kind == "short-external-data":
        onnx.save(good, path, save_as_external_data=True, location="bad.onnx.data", size_threshold=0)
        data_path = os.path.join(str(directory), "bad.onnx.data")
        os.truncate(data_path, os.path.getsize(data_path) // 2)
    elif kind == "unknown-op":
        onnx.save(_unknown_op_model(), path)
    elif kind == "custom-op":
        onnx.save(_custom_op_model(), path)
    elif kind == "absent":
        path = os.path.join(str(directory), "absent.onnx")
    return path


@pytest.mark.parametrize("kind, message", [
    ("text", "not an ONNX model or truncated"),
    ("truncated", "not an ONNX model or truncated"),
    ("missing-external-data", "missing external data: initializer 'W' points to 'bad.onnx.data'"),
    ("short-external-data", "truncated external data: initializer"),
    ("unknown-op", "unknown operator FooBar (ai.onnx opset 17)"),
    ("custom-op", "operator FooBar of domain my.ops is not known to ONNX Runtime"),
    ("absent", "no such file"),
])
@pytest.mark.live
def test_bad_models_get_one_line_and_exit_3(tmp_path, kind, message):
    path = _write_bad_model(kind, tmp_path)
    child = subprocess.run([ORTPROF, "lint", path], capture_output=True, text=True, timeout=120)
    assert child.returncode == EXIT_INPUT
    lines = child.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ortprof: error: ") and message in lines[0], child.stderr
    assert child.stdout == ""


def test_load_model_rejects_an_empty_message(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        load_model(str(path))
