"""`ortprof record --pid` of a Python service ortprof did not start: the startup hook's recording
is attached for the window (sessions, options, per-run latency, as a launched workload gets) and
taken out at its end; the report's latency against the service's own."""
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

import pytest

from conftest import OLD_ORT_PYTHON, ROOT
from live import report_json, run_ortprof

pytestmark = [pytest.mark.live, pytest.mark.slow]
SERVICE = ROOT / "tests" / "workloads" / "attach_service.py"


@pytest.fixture
def service(tmp_path):
    out = tmp_path / "service"
    out.mkdir()
    process = subprocess.Popen([sys.executable, str(SERVICE), "--out", str(out), "--rate", "20"],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("ready"), "the service did not start"
    yield process, out
    process.kill()
    process.wait()


def own_runs(out, start, end):
    """The service's own run() durations (ms) that started in [start, end] (CLOCK_MONOTONIC)."""
    runs = [tuple(map(float, line.split())) for line in (out / "latency.txt").read_text().splitlines() if line.strip()]
    return [1000 * duration for begun, duration in runs if start <= begun <= end]


@pytest.mark.skipif(shutil.which("gdb") is None or os.geteuid() != 0, reason="attach needs gdb and ptrace (root here)")
def test_record_pid_attaches_the_hook_and_takes_it_out(service, tmp_path):
    process, out = service
    time.sleep(1.5)
    run_ortprof("record", "-q", "--pid", str(process.pid), "--duration", "4", "-o", str(tmp_path / "run"), check=True)
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["hook"]["attach"] == "attached" and manifest["hook"]["detach"].startswith("detached")
    report = report_json(tmp_path / "run")
    (session,) = report["sessions"]
    assert session["source"] == "attach" and session["options_known"] is True
    assert session["options"]["config"]["session.intra_op.allow_spinning"] == "0"
    assert session["options"]["intra_op_num_threads"] == 2
    window = manifest["window"]
    own = own_runs(out, window["start_mono"], window["end_mono"])
    assert abs(session["runs"] - len(own)) <= 2
    assert session["p50_ms"] == pytest.approx(statistics.median(own), rel=0.1, abs=1.0)
    # the remedy speaks of what the service set, not of defaults
    assert "unknown" not in json.dumps([f["evidence"] for f in report["findings"]])
    # taken out: the service's methods are its own again
    (out / "probe-after").touch()
    deadline = time.monotonic() + 10
    while not (out / "probe-after.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    after = json.loads((out / "probe-after.json").read_text())
    assert after["run_is_original"] and after["init_is_original"] and after["run_with_iobinding_is_original"]
    assert not after["patched_flag"] and not after["module"]


def test_record_pid_of_a_non_python_process_says_so_and_records(tmp_path):
    """A process without Python's onnxruntime: no attach attempt; perf still records (here: sleep)."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        result = run_ortprof("record", "-q", "--pid", str(sleeper.pid), "--duration", "1", "-o", str(tmp_path / "run"))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode == 3 and "onnxruntime is not loaded" in result.stderr


# -- without injection: the pybind11 dispatcher probes (the pybind signal) ------------------------
PYBIND_SERVICE = ROOT / "tests" / "workloads" / "pybind_service.py"
# runs of a few ms: the ~0.1 ms the span leaves out (Python's wrapper, docs/pybind.md) is within 10%
HEAVY = ("--rate", "20", "--width", "512", "--depth", "8", "--batch", "96", "--threads", "2")
needs_uprobes = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("perf") is None,
                                   reason="uprobes need root and perf")


def start_pybind_service(out, *arguments, python=sys.executable, prefix=(), env=None):
    process = subprocess.Popen([*prefix, str(python), str(PYBIND_SERVICE), "--out", str(out), "--seconds", "90",
                                *arguments], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True, env=env)
    assert process.stdout.readline().startswith("ready"), "the service did not start"
    time.sleep(1.0)
    return process, json.loads((out / "ready.json").read_text())


def stop(process):
    process.kill()
    process.wait()


def record_pid(pid, run, *arguments, env=None, timeout=120):
    """`ortprof record --pid` as a child whose pid names its probe group; (exit code, stderr, its pid)."""
    recording = subprocess.Popen([sys.executable, "-m", "ortprof", "record", "-q", "--pid", str(pid), "-o", str(run),
                                  *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, **(env or {})})
    _, stderr = recording.communicate(timeout=timeout)
    return recording.returncode, stderr, recording.pid


def probe_groups_of(owner_pid):
    """tracefs' uprobe events of the probe group of ortprof process `owner_pid`."""
    with open("/sys/kernel/tracing/uprobe_events") as stream:
        return [line for line in stream if f"ortprof_{owner_pid}_" in line]


def assert_timed_by_probes(run, out, ready, why):
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["pybind"]["instead_of_attach"] == why and manifest["pybind"]["not_timed"] is None
    report = report_json(run)
    (session,) = report["sessions"]
    assert session["source"] == "pybind" and session["handle"] == hex(ready["session"])
    assert session["options_known"] is False and session["model"] is None
    assert session["caller_tids"] == [ready["pid"]]
    window = manifest["window"]
    own = own_runs(out, window["start_mono"], window["end_mono"])
    assert abs(session["runs"] - len(own)) <= 2 and len(own) >= 40
    assert session["p50_ms"] == pytest.approx(statistics.median(own), rel=0.1)
    # nothing guessed: the remedies and the notes say the options are unknown
    evidence = json.dumps([f["evidence"] for f in report["findings"]])
    assert "allow_spinning=1" not in evidence and "(default)" not in evidence
    assert any("options and models unknown" in note for note in report["notes"])
    return manifest, report, session


@needs_uprobes
@pytest.mark.parametrize("python", [sys.executable, OLD_ORT_PYTHON], ids=["wheel", "1.15.1"])
def test_record_pid_no_attach_times_run_at_the_dispatchers_and_leaves_no_probe(python, tmp_path):
    if not os.path.exists(python):
        pytest.skip(f"{python} is not there (make test-tools makes it)")
    out = tmp_path / "service"
    out.mkdir()
    model = tmp_path / "model.onnx"      # built by this venv's onnx (the 1.15.1 venv has none)
    subprocess.run([sys.executable, str(PYBIND_SERVICE), "--out", str(out), *HEAVY, "--save-model", str(model)],
                   check=True)
    process, ready = start_pybind_service(out, *HEAVY, "--model", str(model), python=python)
    try:
        code, stderr, ortprof_pid = record_pid(process.pid, tmp_path / "run", "--no-attach", "--duration", "4")
        assert code == 0, stderr
        manifest, _, session = assert_timed_by_probes(tmp_path / "run", out, ready, "--no-attach")
    finally:
        stop(process)
    assert manifest["hook"]["attach"] == "not attached (--no-attach)" and manifest["hook"]["runs"] == 0
    assert session["ort_version"] == ready["version"]
    assert probe_groups_of(ortprof_pid) == []


@needs_uprobes
def test_record_pid_falls_back_to_the_probes_when_the_attach_is_refused(tmp_path):
    """gdb missing (a PATH without it): the attach is refused, the dispatchers time run()."""
    if shutil.which("bpftrace") is None:
        pytest.skip("needs bpftrace for the PATH given to ortprof")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("perf", "bpftrace"):
        (tools / tool).symlink_to(shutil.which(tool))
    out = tmp_path / "service"
    out.mkdir()
    process, ready = start_pybind_service(out, *HEAVY)
    try:
        code, stderr, ortprof_pid = record_pid(process.pid, tmp_path / "run", "--duration", "4",
                                               env={"PATH": str(tools)})
        assert code == 0, stderr
        manifest, _, _ = assert_timed_by_probes(tmp_path / "run", out, ready,
                                                "the startup hook's recording could not be attached")
    finally:
        stop(process)
    assert "gdb is not installed" in manifest["hook"]["attach"]
    assert probe_groups_of(ortprof_pid) == []


@needs_uprobes
def test_sigterm_of_record_pid_keeps_the_runs_and_removes_the_probes(tmp_path):
    out = tmp_path / "service"
    out.mkdir()
    process, ready = start_pybind_service(out, "--rate", "20")
    try:
        recording = subprocess.Popen([sys.executable, "-m", "ortprof", "record", "-q", "--pid", str(process.pid),
                                      "--no-attach", "--duration", "60", "-o", str(tmp_path / "run")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not probe_groups_of(recording.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert probe_groups_of(recording.pid), "the probes were never added"
        time.sleep(3)
        recording.send_signal(signal.SIGTERM)
        recording.wait(timeout=60)
        assert probe_groups_of(recording.pid) == []
        manifest = json.loads((tmp_path / "run" / "run.json").read_text())
        assert manifest["status"] == "interrupted" and manifest["pybind"]["runs"] >= 40
        (session,) = report_json(tmp_path / "run", allowed_exits=(0, 1))["sessions"]
        assert session["handle"] == hex(ready["session"]) and session["runs"] >= 10
    finally:
        stop(process)


@needs_uprobes
def test_a_service_in_another_mount_namespace_is_probed_through_its_root(tmp_path):
    """The module's path exists only in the service's mount namespace (a bind mount there): the
    probes reach the same file through /proc/PID/root."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare")
    import onnxruntime
    package = os.path.dirname(onnxruntime.__file__)
    inside = tmp_path / "ns"          # empty here; onnxruntime is bound under it in the namespace only
    inside.mkdir()
    out = tmp_path / "service"
    out.mkdir()
    script = (f"mount -t tmpfs none {inside} && mkdir {inside}/onnxruntime && "
              f"mount --bind {package} {inside}/onnxruntime && exec \"$0\" \"$@\"")
    env = {**os.environ, "PYTHONPATH": str(inside)}
    process, ready = start_pybind_service(out, *HEAVY, prefix=("unshare", "--mount", "--fork", "--kill-child", "sh",
                                                               "-c", script), env=env)
    try:
        pid = int(ready["pid"])
        mapped = next(line.split()[-1] for line in open(f"/proc/{pid}/maps") if "onnxruntime_pybind11_state" in line)
        assert mapped.startswith(str(inside)) and not os.path.exists(mapped)
        code, stderr, ortprof_pid = record_pid(pid, tmp_path / "run", "--no-attach", "--duration", "4")
        assert code == 0, stderr
        manifest, _, _ = assert_timed_by_probes(tmp_path / "run", out, ready, "--no-attach")
    finally:
        stop(process)
    assert manifest["pybind"]["module"] == mapped
    assert probe_groups_of(ortprof_pid) == []


@needs_uprobes
def test_a_c_api_client_in_another_mount_namespace_is_probed_through_its_root(tmp_path):
    """The capi signal's --pid: libonnxruntime.so mapped under a path that exists only in the
    client's mount namespace is probed as the same file through /proc/PID/root."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper, save
    import numpy as np
    library = next(iter(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi",
                                                       "libonnxruntime.so.*")))), None)
    if shutil.which("gcc") is None or shutil.which("unshare") is None or library is None:
        pytest.skip("needs gcc, unshare and the wheel's libonnxruntime.so")
    client = tmp_path / "ortapi_client"
    subprocess.run(["gcc", "-O2", "-o", str(client), str(ROOT / "tests" / "c" / "ortapi_client.c"), "-ldl"], check=True)
    side = 256                       # the client feeds a 256x256 input
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [side, side])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [side, side])
    weight = numpy_helper.from_array(np.full((side, side), 0.01, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "m", [x], [y], [weight])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(tmp_path / "m.onnx"))
    inside = tmp_path / "ns"
    inside.mkdir()
    script = (f"mount -t tmpfs none {inside} && mkdir {inside}/lib && "
              f"mount --bind {os.path.dirname(library)} {inside}/lib && exec \"$0\" \"$@\"")
    log = tmp_path / "client.log"
    with open(log, "w") as output:
        process = subprocess.Popen(["unshare", "--mount", "--fork", "--kill-child", "sh", "-c", script, str(client),
                                    f"{inside}/lib/{os.path.basename(library)}", str(tmp_path / "m.onnx"), "100000"],
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "run " not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        client_pid = int(subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()[0])
        mapped = next(line.split()[-1] for line in open(f"/proc/{client_pid}/maps") if "libonnxruntime.so" in line)
        assert mapped.startswith(str(inside)) and not os.path.exists(mapped)
        code, stderr, ortprof_pid = record_pid(client_pid, tmp_path / "run", "--duration", "3")
        assert code == 0, stderr
    finally:
        stop(process)
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["capi"]["library"] == f"/proc/{client_pid}/root{mapped}" and manifest["capi"]["not_timed"] is None
    (session,) = report_json(tmp_path / "run")["sessions"]
    window = manifest["window"]
    own = [(int(end) - int(begin)) / 1e6 for _, _, begin, end in
           (line.split() for line in log.read_text().splitlines() if line.startswith("run "))
           if window["start_mono"] <= int(begin) / 1e9 <= window["end_mono"]]
    assert session["source"] == "capi" and abs(session["runs"] - len(own)) <= 2 and len(own) >= 20
    assert session["p50_ms"] == pytest.approx(statistics.median(own), rel=0.1)
    assert probe_groups_of(ortprof_pid) == []
