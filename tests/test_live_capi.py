"""`ortprof record` of non-Python ORT clients: sessions, options and per-run latency from uprobes
on ORT's C API (the capi signal), checked against what the clients measure themselves, and
the probes gone when recording ends, however it ends."""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT
from live import own_latencies, report_json, run_ortprof

pytestmark = [pytest.mark.live, pytest.mark.slow]

NODE = shutil.which("node")
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
SERVICE = ROOT / "tests" / "workloads" / "node_service.js"
CLIENT_SOURCE = ROOT / "tests" / "c" / "ortapi_client.c"
WHEEL_LIBRARY = next((ROOT / ".venv" / "lib").glob("python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*"), None)
needs_root_and_node = pytest.mark.skipif(
    os.geteuid() != 0 or NODE is None or not (NODE_MODULES / "onnxruntime-node").is_dir(),
    reason="uprobes need root; node and onnxruntime-node come with `make test-tools`")


def ortprof_groups():
    done = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True)
    return sorted({line.split(":")[0].strip() for line in done.stdout.splitlines() if "ortprof_" in line})


@pytest.fixture(scope="module")
def node_app(tmp_path_factory):
    """The service beside a node_modules that has onnxruntime-node, as an app is installed, and a
    MatMul model of a few ms a run on two threads."""
    app = tmp_path_factory.mktemp("node-app")
    (app / "node_modules").symlink_to(NODE_MODULES)
    shutil.copy(SERVICE, app / "service.js")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 1024])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 1024])
    weight = numpy_helper.from_array(np.full((1024, 1024), 0.001, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul", [x], [y], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(app / "model.onnx"))
    return app


def _window(run):
    window = json.loads((run / "run.json").read_text())["window"]
    return window["start_mono"], window["end_mono"]


def capi_sessions(report):
    return [s for s in report["sessions"] if s["source"] == "capi"]


@needs_root_and_node
def test_a_launched_node_service_has_its_session_options_and_latency(node_app, tmp_path):
    log = tmp_path / "service.log"
    run_ortprof("record", "-q", "--duration", "5", "-o", str(tmp_path / "run"), "--",
                NODE, str(node_app / "service.js"), str(node_app / "model.onnx"), "2", "1", "10", "40", str(log),
                check=True)
    report = report_json(tmp_path / "run")
    (session,) = capi_sessions(report)
    assert session["model"] == str(node_app / "model.onnx")
    assert session["options"]["intra_op_num_threads"] == 2
    assert session["options"]["config"] == {"session.intra_op.allow_spinning": "1"}
    assert session["options_known"] is True and session["handle"].startswith("0x")
    # Run as the C API saw it vs the service's own timing around `await session.run` (which adds
    # Node's hand-over to ORT): the probes' p50 is inside it and close to it.
    own = statistics.median(own_latencies(log, _window(tmp_path / "run")))
    assert session["runs"] >= 40 and session["p50_ms"] <= own * 1.02
    assert session["p50_ms"] >= 0.8 * own or own - session["p50_ms"] <= 2.0, (session["p50_ms"], own)
    # Its pool: the worker the session's creation started is tied to it, and spins.
    ids = [f["id"] for f in report["findings"]]
    assert "spin-wait" in ids
    assert any(w["session"] == 1 and w["pool"] == "intra-op" for w in report["pool_workers"] or [])
    assert ortprof_groups() == []


@needs_root_and_node
def test_spin_of_a_node_service_matches_its_cpu_with_spinning_minus_without(node_app, tmp_path):
    """Ground truth without ortprof: the service's own CPU with spinning on minus off."""
    def unprofiled_cpu(spinning):
        log = tmp_path / f"unprofiled-{spinning}.log"
        subprocess.run([NODE, str(node_app / "service.js"), str(node_app / "model.onnx"), "2", spinning, "10", "6",
                        str(log)], check=True, timeout=60, cwd=node_app)
        return float(log.read_text().split("cpu_pct ")[-1])
    truth = unprofiled_cpu("1") - unprofiled_cpu("0")
    run_ortprof("record", "-q", "--duration", "5", "-o", str(tmp_path / "run"), "--",
                NODE, str(node_app / "service.js"), str(node_app / "model.onnx"), "2", "1", "10", "40",
                str(tmp_path / "profiled.log"), check=True)
    spin = report_json(tmp_path / "run")["totals"]["spin_pct"]
    assert spin == pytest.approx(truth, rel=0.35), (spin, truth)


@needs_root_and_node
def test_an_attached_node_service_is_timed_from_the_attach_on(node_app, tmp_path):
    log = tmp_path / "service.log"
    service = subprocess.Popen([NODE, str(node_app / "service.js"), str(node_app / "model.onnx"), "2", "0", "10",
                                "30", str(log)], cwd=node_app)
    try:
        time.sleep(2)
        run_ortprof("record", "-q", "--pid", str(service.pid), "--duration", "4", "-o", str(tmp_path / "run"),
                    check=True)
        report = report_json(tmp_path / "run")
    finally:
        service.kill()
        service.wait()
    (session,) = capi_sessions(report)
    # created before ortprof looked: what is unknown is said so, not guessed
    assert session["model"] is None and session["options_known"] is False
    assert 30 <= session["runs"] <= 45
    own = statistics.median(own_latencies(log, _window(tmp_path / "run")))     # the same runs
    assert session["p50_ms"] <= own * 1.02 and (session["p50_ms"] >= 0.8 * own or own - session["p50_ms"] <= 2.0)
    assert ortprof_groups() == []


@pytest.fixture(scope="module")
def c_client(tmp_path_factory):
    if shutil.which("gcc") is None or WHEEL_LIBRARY is None:
        pytest.skip("gcc and the wheel's libonnxruntime.so are needed")
    path = tmp_path_factory.mktemp("c-client") / "ortapi_client"
    subprocess.run(["gcc", "-O2", "-o", str(path), str(CLIENT_SOURCE), "-ldl"], check=True)
    return str(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="uprobes need root")
def test_a_c_client_given_its_library_on_the_command_line(c_client, node_app, tmp_path):
    """A program that dlopens the library it is given: probed before it starts."""
    model = tmp_path / "square.onnx"
    side = 256   # the client feeds a 256x256 input
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [side, side])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [side, side])
    weight = numpy_helper.from_array(np.full((side, side), 0.01, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "m", [x], [y], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(model))
    run_ortprof("record", "-q", "--duration", "2", "-o", str(tmp_path / "run"), "--",
                c_client, str(WHEEL_LIBRARY), str(model), "100000", check=True)
    report = report_json(tmp_path / "run")
    (session,) = capi_sessions(report)
    assert session["model"] == str(model) and session["options"]["intra_op_num_threads"] == 1
    lines = (tmp_path / "run" / "workload.log").read_text().splitlines()
    own = statistics.median((int(end) - int(begin)) / 1e6 for _, _, begin, end in
                            (line.split() for line in lines if line.startswith("run ")))
    assert session["p50_ms"] == pytest.approx(own, rel=0.1, abs=2.0)
    assert ortprof_groups() == []


@needs_root_and_node
def test_probes_are_removed_when_ortprof_is_stopped_with_sigterm(node_app, tmp_path):
    recording = subprocess.Popen([sys.executable, "-m", "ortprof", "record", "-q", "--duration", "30", "-o",
                                  str(tmp_path / "run"), "--", NODE, str(node_app / "service.js"),
                                  str(node_app / "model.onnx"), "1", "1", "10", "60", str(tmp_path / "s.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not ortprof_groups() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ortprof_groups(), "the probes were never added"
    time.sleep(3)
    recording.send_signal(signal.SIGTERM)
    recording.wait(timeout=60)
    assert ortprof_groups() == []
    assert capi_sessions(report_json(tmp_path / "run", allowed_exits=(0, 1)))
