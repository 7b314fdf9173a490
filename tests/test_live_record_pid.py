"""`ortprof record --pid` of a Python service ortprof did not start: the startup hook's recording
is attached for the window (sessions, options, per-run latency, as a launched workload gets) and
taken out at its end; the report's latency against the service's own."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import pytest

from conftest import ROOT
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
