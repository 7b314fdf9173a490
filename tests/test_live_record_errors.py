"""`ortprof record`: profilers other than the default, attaching, and everything that goes wrong."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from live import DEMO, ORTPROF, VENV_BIN, run_ortprof

pytestmark = pytest.mark.slow


def one_line_error(result, code):
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("ortprof: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def test_command_not_found(tmp_path):
    line = one_line_error(run_ortprof("record", "-o", str(tmp_path / "r"), "--", "no-such-command-xyz"), 3)
    assert "command not found" in line


def test_workload_exits_before_warmup_keeps_the_run(tmp_path):
    out = tmp_path / "r"
    result = run_ortprof("record", "-q", "-o", str(out), "--", sys.executable, "-c",
                         "import sys; print('bye'); sys.exit(3)")
    line = one_line_error(result, 5)
    assert "exited with code 3" in line
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["exit_code"] == 3 and manifest["status"] == "workload-failed"
    assert "bye" in (out / "workload.log").read_text()
    # nothing was profiled: the report says so instead of diagnosing start-up CPU
    line = one_line_error(run_ortprof("report", str(out)), 3)
    assert line.endswith(f"{out}: nothing was profiled: the workload exited with code 3 before warm-up ended; "
                         f"its output is in {out}/workload.log")


def test_pid_that_does_not_exist(tmp_path):
    line = one_line_error(run_ortprof("record", "--pid", "999999", "-o", str(tmp_path / "r")), 3)
    assert "no such process" in line


def test_pid_without_onnxruntime(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        line = one_line_error(run_ortprof("record", "--pid", str(sleeper.pid), "-o", str(tmp_path / "r")), 3)
        assert "onnxruntime is not loaded" in line
    finally:
        sleeper.kill()


def test_output_not_writable(tmp_path):
    line = one_line_error(run_ortprof("record", "-o", "/proc/ortprof-run", "--", "true"), 3)
    assert "cannot write the run directory" in line


def test_perf_missing_when_asked_for(tmp_path):
    # A PATH with python's bin only: no perf anywhere ortprof looks.
    env = {"PATH": str(VENV_BIN)}
    line = one_line_error(run_ortprof("record", "--profiler", "perf", "-o", str(tmp_path / "r"), "--",
                                      sys.executable, "-c", "pass", env=env), 4)
    assert "perf" in line and "apt-get install" in line


def test_auto_falls_back_to_pyspy_without_perf_and_says_why(tmp_path):
    out = tmp_path / "r"
    result = run_ortprof("record", "-q", "--duration", "2", "-o", str(out), "--", *DEMO, "--rate", "10",
                         env={"PATH": str(VENV_BIN)})
    assert result.returncode == 0, result.stderr
    assert "spin detection needs perf" in result.stderr
    manifest = json.loads((out / "run.json").read_text())
    # the samples come from py-spy; the scheduler's BPF program (where built) needs no perf
    assert "py-spy" in manifest["profilers"] and "perf" not in manifest["profilers"]
    assert set(manifest["profilers"]) <= {"py-spy", "ortprof-bpf-sched"}
    assert (out / "py-spy.txt").stat().st_size > 0


def test_pyspy_profiler_records_python_stacks(tmp_path):
    out = tmp_path / "r"
    run_ortprof("record", "-q", "--profiler", "both", "--duration", "2", "-o", str(out), "--",
                *DEMO, "--rate", "20", check=True)
    text = (out / "py-spy.txt").read_text()
    assert "run_loop" in text   # the demo's request loop, as py-spy saw it
    assert (out / "perf.data").stat().st_size > 0
    report = json.loads(run_ortprof("report", str(out), "--json", check=True).stdout)
    assert report["samples"] > 0


def test_attach_to_running_process(tmp_path):
    workload = subprocess.Popen([*DEMO, "--rate", "10", "--duration", "20"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(3)   # model load and first runs
        out = tmp_path / "r"
        run_ortprof("record", "-q", "--pid", str(workload.pid), "--duration", "2", "-o", str(out), check=True)
        manifest = json.loads((out / "run.json").read_text())
        assert manifest["mode"] == "attach" and manifest["profiled_pid"] == workload.pid
        assert workload.poll() is None, "attaching must not stop the process"
        report = json.loads(run_ortprof("report", str(out), "--json", check=True).stdout)
        assert any(t["role"] == "intra-op-worker" for t in report["threads"])
    finally:
        workload.kill()


def test_ctrl_c_stops_profilers_then_workload_and_keeps_everything(tmp_path):
    out = tmp_path / "r"
    process = subprocess.Popen([ORTPROF, "record", "-q", "--duration", "60", "-o", str(out), "--",
                                *DEMO, "--rate", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        manifest_path = out / "run.json"
        if manifest_path.exists() and json.loads(manifest_path.read_text()).get("status") == "recording":
            break
        time.sleep(0.2)
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["stopped_by_ortprof"] is True
    assert manifest["profilers"]["perf"]["bytes"] > 0 and 1 < manifest["window"]["seconds"] < 10
    workload_pid = manifest["pid"]
    assert not os.path.exists(f"/proc/{workload_pid}") or open(f"/proc/{workload_pid}/stat").read().split()[2] == "Z"
    report = json.loads(run_ortprof("report", str(out), "--json", check=True).stdout)
    assert report["samples"] > 0


def test_report_of_runs_with_bad_inputs(tmp_path):
    assert "no such run directory" in one_line_error(run_ortprof("report", str(tmp_path / "missing")), 3)
    (tmp_path / "empty").mkdir()
    assert "not an ortprof run" in one_line_error(run_ortprof("report", str(tmp_path / "empty")), 3)


@pytest.fixture
def tiny_filesystem(tmp_path):
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)])


def test_disk_full_keeps_the_run_and_says_so(tiny_filesystem):
    out = tiny_filesystem / "run"
    result = run_ortprof("record", "-q", "--duration", "4", "-o", str(out), "--", *DEMO, "--rate", "10")
    line = one_line_error(result, 4)
    assert "No space left on device" in line
    manifest = json.loads((out / "run.json").read_text())   # the last complete one
    assert manifest["schema"] == "ortprof.run/1"
    assert (out / "perf.data").stat().st_size > 0
    assert "Traceback" not in (out / "workload.log").read_text()


def test_json_output_is_valid_json_with_the_workload_on_stderr(tmp_path):
    workload = [sys.executable, "-c", "import sys, time; print('to its stdout', flush=True); "
                "print('to its stderr', file=sys.stderr, flush=True); time.sleep(30)"]
    result = run_ortprof("record", "-q", "--json", "--profiler", "none", "--delay", "0.5", "--duration", "1",
                         "-o", str(tmp_path / "r"), "--", *workload)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["schema"] == "ortprof.run/1"
    assert "to its stdout" in result.stderr and "to its stderr" in result.stderr
    # Stopped by ortprof after the window: what it prints then (a KeyboardInterrupt traceback)
    # goes to workload.log only.
    assert "Traceback" not in result.stderr
    assert "KeyboardInterrupt" in (tmp_path / "r" / "workload.log").read_text()


def test_workload_failing_during_profiling_exits_5_and_keeps_the_run(tmp_path):
    out = tmp_path / "r"
    result = run_ortprof("record", "-q", "--profiler", "none", "--delay", "0.3", "--duration", "10", "-o", str(out),
                         "--", sys.executable, "-c", "import sys, time; time.sleep(1.5); sys.exit(3)")
    line = one_line_error(result, 5)
    assert "exited with code 3 during profiling" in line
    assert json.loads((out / "run.json").read_text())["status"] == "workload-failed"


def test_second_ctrl_c_does_not_cut_the_cleanup_short(tmp_path):
    out = tmp_path / "r"
    stubborn = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
    process = subprocess.Popen([ORTPROF, "record", "-q", "--profiler", "none", "--delay", "0.3", "--duration", "60",
                                "-o", str(out), "--", sys.executable, "-c", stubborn],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    time.sleep(1)                      # the workload ignores SIGINT: ortprof is waiting to send SIGTERM
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["stopped_by_ortprof"]
    assert not os.path.exists(f"/proc/{manifest['pid']}") or open(f"/proc/{manifest['pid']}/stat").read().split()[2] == "Z"
