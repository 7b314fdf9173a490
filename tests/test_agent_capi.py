"""ortprof agent and native ORT clients: C API uprobes on the libonnxruntime.so a followed process
maps, recorded by its perf, decoded per window into the runs signal's records (the window's
report has the sessions and their latency) and into the latency histogram with a session
label; the agent's probe group gone when it stops (SIGTERM too), when no followed process
maps the library any more, and at the next start after a killed agent.

The fast tests drive agent/capi.NativeProcess with calls as the probes give them; the live
ones follow a Node service (onnxruntime-node) under the real perf and uprobes.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import time
from types import SimpleNamespace
from urllib.request import urlopen

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT
from live import ORTPROF, own_latencies
from test_agent import Lines
from ortprof.agent.capi import NativeProcess, timed_runs
from ortprof.agent.perfsession import PerfSession
from ortprof.agent.sessions import SessionLabels, session_labels
from ortprof.agent.uprobes import ProbedFile
from ortprof.agent.window import WindowOptions
from ortprof.analysis.latency import session_latencies
from ortprof.signals.capi.spans import CapiCall

NODE = shutil.which("node")
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
SERVICE = ROOT / "tests" / "workloads" / "node_service.js"
needs_root_and_node = pytest.mark.skipif(
    os.geteuid() != 0 or NODE is None or not (NODE_MODULES / "onnxruntime-node").is_dir(),
    reason="uprobes need root; node and onnxruntime-node come with `make test-tools`")


# -- fast: one process's calls across windows ----------------------------------------------
PID = 4242


def call(function, start_ms, end_ms, tid=PID, **arguments):
    returned = {} if function.startswith("Release") else {"status": "0x0"}
    return CapiCall(function, "1_l0", PID, tid, start_ms * 1_000_000, end_ms * 1_000_000, dict(arguments), returned)


def runs_of(handle, first_ms, count, ms=3, every=100):
    return [call("Run", first_ms + i * every, first_ms + i * every + ms, session=handle) for i in range(count)]


def native():
    table = SimpleNamespace(ort_version="1.31.1", api_version=23, build_id="ab")
    return NativeProcess(ProbedFile("/opt/ort/libonnxruntime.so.1", "l0", table, []))


def sessions_by_handle(records):
    return {record["handle"]: record for record in records if record["event"] == "session"}


def test_a_session_keeps_its_model_and_options_in_later_windows():
    process = native()
    create = [call("CreateSessionOptions", 0, 1),
              call("SetIntraOpNumThreads", 2, 3, options="0x10", threads="2"),
              call("AddSessionConfigEntry", 4, 5, options="0x10", key="session.intra_op.allow_spinning", value="0"),
              call("CreateSession", 10, 90, model="/srv/models/bert.onnx", options="0x10")]
    first = process.window_records(create + runs_of("0xb0", 100, 5), PID, {})
    second = process.window_records(runs_of("0xb0", 60_000, 7), PID, {})
    for records, count in ((first, 5), (second, 7)):
        session = sessions_by_handle(records)["0xb0"]
        assert session["model"] == "/srv/models/bert.onnx" and session["options_known"] is True
        assert session["options"]["intra_op_num_threads"] == 2
        assert session["options"]["config"] == {"session.intra_op.allow_spinning": "0"}
        assert session_labels(records) == {session["session"]: SessionLabels(
            "bert.onnx@0xb0", "/srv/models/bert.onnx", "intra_op_num_threads=2,session.intra_op.allow_spinning=0")}
        (latency,) = session_latencies(records)
        assert latency.source == "capi" and len(latency.durations_ms) == count
        assert latency.durations_ms[0] == pytest.approx(3.0)
    assert [run[0] for run in timed_runs(second)] == [1] * 7


def test_a_session_created_before_the_probes_is_not_given_a_later_creation():
    """Handle A was created before the agent looked (runs only); B is created in a later window:
    its creation is B's, not A's, though A is used first in that window."""
    process = native()
    first = process.window_records(runs_of("0xa0", 0, 3), PID, {})
    assert sessions_by_handle(first)["0xa0"]["options_known"] is False
    assert session_labels(first) == {1: SessionLabels("unknown@0xa0", "unknown", "unknown")}
    window = runs_of("0xa0", 60_000, 4) + [call("CreateSession", 60_050, 60_120, model="/m/b.onnx", options="0x20")]
    window += runs_of("0xb0", 60_200, 2)
    records = process.window_records(sorted(window, key=lambda c: c.start_ns), PID, {})
    sessions = sessions_by_handle(records)
    assert sessions["0xa0"]["model"] is None and sessions["0xa0"]["options_known"] is False
    assert sessions["0xb0"]["model"] == "/m/b.onnx" and sessions["0xb0"]["options_known"] is True
    labels = {number: labels.session for number, labels in session_labels(records).items()}
    assert sorted(labels.values()) == ["b.onnx@0xb0", "unknown@0xa0"]
    counts = {labels[latency.session]: len(latency.durations_ms) for latency in session_latencies(records)}
    assert counts == {"unknown@0xa0": 4, "b.onnx@0xb0": 2}


def test_the_first_window_ties_no_creation_to_a_handle_used_before_it():
    process = native()
    window = runs_of("0xa0", 0, 2) + [call("CreateSession", 500, 600, model="/m/c.onnx", options="0x30")]
    window += runs_of("0xc0", 700, 2)
    sessions = sessions_by_handle(process.window_records(window, PID, {}))
    assert sessions["0xa0"]["options_known"] is False and sessions["0xc0"]["model"] == "/m/c.onnx"


def test_a_creation_first_run_in_a_later_window_is_carried_and_a_released_handle_forgotten():
    process = native()
    first = process.window_records([call("SetIntraOpNumThreads", 0, 1, options="0x40", threads="1"),
                                    call("CreateSession", 5, 50, model="/m/d.onnx", options="0x40")], PID, {})
    assert not [r for r in first if r["event"] == "session"]
    second = process.window_records(runs_of("0xd0", 60_000, 3), PID, {})
    session = sessions_by_handle(second)["0xd0"]
    assert session["model"] == "/m/d.onnx" and session["options"]["intra_op_num_threads"] == 1
    assert not process.unclaimed
    # released; a new session at the same address is the new creation's
    third = process.window_records(runs_of("0xd0", 120_000, 1) + [call("ReleaseSession", 120_500, 120_501,
                                                                       session="0xd0")], PID, {})
    assert sessions_by_handle(third)["0xd0"]["model"] == "/m/d.onnx"
    fourth = process.window_records([call("CreateSession", 180_000, 180_050, model="/m/e.onnx", options="0x50")]
                                    + runs_of("0xd0", 180_100, 2), PID, {})
    assert sessions_by_handle(fourth)["0xd0"]["model"] == "/m/e.onnx"


def test_the_histogram_labels_sessions_and_bounds_their_number():
    from ortprof.agent.metrics import MAX_SESSION_LABELS, AgentMetrics
    metrics = AgentMetrics()
    target = SimpleNamespace(service="svc", pid=PID, container=None, pod=None, key=(PID, 1.0))
    metrics.observe_runs(target, [(1, 0.0, 0.004, PID, "run"), (1, 0.1, 0.006, PID, "run")],
                         {1: SessionLabels("b.onnx@0xb0", "/m/b.onnx", "none set")})
    sessions = range(2, MAX_SESSION_LABELS + 10)
    metrics.observe_runs(target, [(n, 0.0, 0.001, PID, "run") for n in sessions],
                         {n: SessionLabels(f"unknown@0x{n:x}") for n in sessions})
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    series = latency_series(families, PID)
    assert series["b.onnx@0xb0"] == (2, pytest.approx(0.010))
    assert len(series) == MAX_SESSION_LABELS + 1 and series["other"][0] == 9
    metrics.forget(target)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    assert latency_series(families, PID) == {}


def test_the_probes_are_recorded_without_a_call_graph_before_the_pid(tmp_path):
    events = ["ortprof_1_2:Run__1_l0", "ortprof_1_2:Run__1_l0__return"]
    session = PerfSession(SimpleNamespace(pid=77), WindowOptions(), "perf", tmp_path, probe_events=events)
    argv = session.argv
    assert argv[-2:] == ["-p", "77"]
    assert argv[argv.index("-e", argv.index("--call-graph")) + 1] == "ortprof_1_2:Run__1_l0/call-graph=no/"
    assert "ortprof_1_2:Run__1_l0__return/call-graph=no/" in argv
    session.close()


# -- live ----------------------------------------------------------------------------------------
def ortprof_groups(owner=None):
    """ortprof probe groups on the machine (of process `owner` only, when given)."""
    done = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True)
    groups = {line.split(":")[0].strip() for line in done.stdout.splitlines() if "ortprof_" in line}
    return sorted(group for group in groups if owner is None or group.startswith(f"ortprof_{owner}_"))


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


# A client that loads onnxruntime-node at once but creates its sessions only once GO exists:
# session after session, each run RUNS times at 20/s then released, so the agent (which has
# found the process by then) sees some created inside its windows.
LATE_SESSIONS_JS = """
const fs = require('fs');
const ort = require('onnxruntime-node');
const [model, go, seconds] = process.argv.slice(2);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function main() {
  while (!fs.existsSync(go)) await sleep(50);
  const x = new ort.Tensor('float32', new Float32Array(256 * 1024).fill(0.5), [256, 1024]);
  const end = Date.now() + Number(seconds) * 1000;
  while (Date.now() < end) {
    const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1 });
    for (let i = 0; i < 10; i++) { await session.run({ x }); await sleep(50); }
    await session.release();
  }
}
main();
"""


@pytest.fixture(scope="module")
def node_app(tmp_path_factory):
    """The service beside a node_modules that has onnxruntime-node (as test_live_capi has it) and
    a MatMul model of a few ms a run."""
    app = tmp_path_factory.mktemp("node-app")
    (app / "node_modules").symlink_to(NODE_MODULES)
    shutil.copy(SERVICE, app / "service.js")
    (app / "late_sessions.js").write_text(LATE_SESSIONS_JS)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 1024])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 1024])
    weight = numpy_helper.from_array(np.full((1024, 1024), 0.001, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul", [x], [y], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8),
              str(app / "model.onnx"))
    return app


def start_service(node_app, log, seconds=40, spinning="0"):
    service = subprocess.Popen([NODE, str(node_app / "service.js"), str(node_app / "model.onnx"), "2", spinning,
                                "10", str(seconds), str(log)], cwd=node_app,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: log.exists() and log.read_text().count("run ") >= 3), "the service did not run"
    return service


def latency_series(families, pid):
    """session label -> (count, sum) of ortprof_run_duration_seconds for process `pid`."""
    series = {}
    family = families.get("ortprof_run_duration_seconds")
    for sample in family.samples if family else ():
        if sample.labels.get("pid") != str(pid):
            continue
        count, total = series.get(sample.labels["session"], (0, 0.0))
        if sample.name.endswith("_count"):
            count = sample.value
        elif sample.name.endswith("_sum"):
            total = sample.value
        series[sample.labels["session"]] = (count, total)
    return series


@pytest.mark.slow
@needs_root_and_node
def test_a_window_of_a_node_service_has_its_session_latency_and_histogram(node_app, tmp_path, monkeypatch):
    """`ortprof agent --once` in-process: the window's report has the C API session with the
    service's latency, its samples are the cpu-clock ones only, the histogram has the runs
    under the session's label, and the agent's probes are gone when it returns."""
    from ortprof.agent.logs import StructuredLog
    from ortprof.agent.runner import Agent, AgentOptions
    monkeypatch.setattr(Agent, "_install_signals", lambda self: None)   # pytest keeps its own
    monkeypatch.setenv("PERF_BUILDID_DIR", str(tmp_path / "buildid"))
    log = tmp_path / "service.log"
    service = start_service(node_app, log, spinning="1")
    lines = Lines()
    agent = Agent(AgentOptions(pids=(service.pid,), window=WindowOptions(seconds=5), work_dir=str(tmp_path / "work"),
                               nice=0), StructuredLog(lines))
    try:
        (result,) = agent.once()
        left = ortprof_groups(os.getpid())
    finally:
        service.kill()
        service.wait()
    assert left == [] and not agent.uprobes.files
    assert lines.events("capi-probed") and not lines.events("capi-not-timed")
    report, profile = result.report, result.profile
    (session,) = [s for s in report.sessions if s.source == "capi"]
    # created before the agent looked: its handle only, said so
    assert session.model is None and session.options_known is False and session.handle.startswith("0x")
    assert 40 <= session.runs <= 55 and session.rate_per_s == pytest.approx(10, rel=0.15)
    own = statistics.median(own_latencies(log, profile.window))    # the window's runs
    assert session.p50_ms <= own * 1.02 and (session.p50_ms >= 0.8 * own or own - session.p50_ms <= 2.0), \
        (session.p50_ms, own)
    # the probe events are in the window's perf.data, counted as events, not as CPU samples
    probe_events = {name: count for name, count in profile.events.items() if name.startswith("ortprof_")}
    assert sum(count for name, count in probe_events.items() if ":Run__" in name) >= 2 * session.runs
    assert report.samples == profile.events["cpu-clock"] == profile.cpu_samples
    assert any(t.role == "caller" for t in report.threads)     # the thread calling Run
    assert "spin-wait" in {f.id for f in report.findings}
    # the histogram: this window's runs, labelled by handle (model unknown)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(agent.metrics.registry).decode())}
    series = latency_series(families, service.pid)
    assert series == {f"unknown@{session.handle}": (session.runs, pytest.approx(session.mean_ms * session.runs / 1000,
                                                                                   rel=1e-3))}


def start_agent(tmp_path, *args):
    log = open(tmp_path / "agent.log", "w")
    return subprocess.Popen([ORTPROF, "agent", "--work-dir", str(tmp_path / "work"), "--nice", "0", *args],
                            stdout=subprocess.DEVNULL, stderr=log)


def agent_events(tmp_path, name):
    records = [json.loads(line) for line in (tmp_path / "agent.log").read_text().splitlines() if line.strip()]
    return [record for record in records if record["event"] == name]


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port):
    text = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


@pytest.mark.slow
@needs_root_and_node
def test_sessions_created_in_windows_are_labelled_by_model_and_the_probes_go_with_the_process(node_app, tmp_path):
    """A running agent (metrics served): sessions the probes saw created carry their model in the
    histogram's label; when the process exits its library's probes are removed though the
    agent runs on; SIGTERM stops it cleanly."""
    go = tmp_path / "go"
    client = subprocess.Popen([NODE, str(node_app / "late_sessions.js"), str(node_app / "model.onnx"), str(go), "12"],
                              cwd=node_app, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = free_port()
    agent = None
    try:
        assert wait_for(lambda: "libonnxruntime" in open(f"/proc/{client.pid}/maps").read(), 30)
        agent = start_agent(tmp_path, "--pid", str(client.pid), "--interval", "2", "--window", "1.5",
                            "--metrics-port", str(port), "--metrics-addr", "127.0.0.1")
        assert wait_for(lambda: ortprof_groups(agent.pid), 30), (tmp_path / "agent.log").read_text()
        go.touch()
        seen = {}

        def labelled_by_model():
            try:
                seen.update(latency_series(scrape(port), client.pid))
            except OSError:
                return False
            return any(label.startswith("model.onnx@0x") and count > 0 for label, (count, _) in seen.items())
        assert wait_for(labelled_by_model, 40), (seen, (tmp_path / "agent.log").read_text()[-3000:])
        client.wait(timeout=40)
        assert wait_for(lambda: agent_events(tmp_path, "process-gone"), 30)
        assert wait_for(lambda: not ortprof_groups(agent.pid), 10)     # the agent runs on without probes
        assert agent.poll() is None
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
    finally:
        for process in (client, agent):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    windows = agent_events(tmp_path, "window")
    assert windows and not agent_events(tmp_path, "window-failed")
    mean_ms = [1000 * total / count for label, (count, total) in seen.items() if count]
    assert all(0.5 < ms < 200 for ms in mean_ms), seen


@pytest.mark.slow
@needs_root_and_node
def test_no_probes_left_after_sigterm_nor_after_a_killed_agent(node_app, tmp_path):
    log = tmp_path / "service.log"
    service = start_service(node_app, log, seconds=60)
    agents = []
    try:
        for name in ("terminated", "killed"):
            (tmp_path / name).mkdir()
            agent = start_agent(tmp_path / name, "--pid", str(service.pid), "--interval", "3", "--window", "2")
            agents.append(agent)
            assert wait_for(lambda: agent_events(tmp_path / name, "window"), 60), \
                (tmp_path / name / "agent.log").read_text()
            assert ortprof_groups(agent.pid)
        terminated, killed = agents
        terminated.send_signal(signal.SIGTERM)
        assert terminated.wait(timeout=60) == 0
        assert ortprof_groups(terminated.pid) == []
        killed.kill()
        killed.wait()
        assert ortprof_groups(killed.pid)                 # left behind by the killed agent
        # the next agent removes it at its start
        result = subprocess.run([ORTPROF, "agent", "--once", "--pid", str(service.pid), "--window", "1",
                                 "--work-dir", str(tmp_path / "killed" / "work"), "--nice", "0"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        removed = [json.loads(line) for line in result.stderr.splitlines() if "stale-uprobes-removed" in line]
        assert removed and ortprof_groups(killed.pid)[:1] == [] and ortprof_groups(killed.pid) == []
        assert "timed by uprobes" in result.stdout
    finally:
        for process in agents + [service]:
            if process.poll() is None:
                process.kill()
                process.wait()
