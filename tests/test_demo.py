"""The built-in demo: model shapes, the generated graph, and the request loop."""
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from conftest import ROOT
from ortprof.demo.model import SHAPES, build_encoder, parameter_count


def test_shapes_match_the_models_they_stand_for():
    # all-MiniLM-L6-v2 has ~22.7M parameters, bert-large ~335M (without pooler/classifier heads: a little less).
    assert parameter_count(SHAPES["small"]) == pytest.approx(22.6e6, rel=0.01)
    assert parameter_count(SHAPES["large"]) == pytest.approx(334e6, rel=0.01)


@pytest.mark.live
def test_generated_encoder_runs_and_counts_its_parameters(tmp_path):
    model = build_encoder(SHAPES["tiny"])
    counted = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    assert counted == pytest.approx(parameter_count(SHAPES["tiny"]), rel=0.01)
    path = tmp_path / "tiny.onnx"
    path.write_bytes(model.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert session.get_inputs()[0].shape == ["batch", "sequence"]
    for length in (3, 10):
        feed = {i.name: np.ones((1, length), np.int64) for i in session.get_inputs()}
        (logits,) = session.run(None, feed)
        assert logits.shape == (1, 2) and np.isfinite(logits).all()


@pytest.mark.live
def test_request_loop_accepts_session_options_and_reports(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(build_encoder(SHAPES["tiny"]).SerializeToString())
    result = subprocess.run([sys.executable, str(ROOT / "ortprof" / "demo" / "workload.py"), "--model", str(path),
                             "--rate", "0", "--requests", "20", "--intra-op-num-threads", "1",
                             "--allow-spinning", "0", "--config", "session.dynamic_block_base=4"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "requests=20" in result.stdout and "p50=" in result.stdout
