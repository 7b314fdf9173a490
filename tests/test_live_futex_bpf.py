"""Futex calls counted in the kernel (bpftrace) with sampled stacks, on real recordings.

With spinning off every request wakes the pool's workers through futex. The
counts must be per thread, match perf stat's independent count over the same
window, and the sampled stacks must lead to ORT's wait path on both wheels, whichever
BPF program counts (the compiled one, the default where `make setup` built it; bpftrace,
the fallback). When BPF is not usable (neither: simulated with ORTPROF_BPF_LOADER="" and
ORTPROF_BPFTRACE=""), record falls back to perf's per-call tracepoints and says so in
run.json and the report.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import OLD_ORT_PYTHON, ROOT
from live import DEMO, ORTPROF, record_demo, report_json
from ortprof import environment as env
from ortprof.doctor import bpftrace_install_command
from ortprof.errors import EXIT_ENVIRONMENT
from ortprof.signals.sched.compiled import LOADER_ENV, loader_path

sys.path.insert(0, str(ROOT / "scripts"))
import bench_record  # noqa: E402  (the benchmark's independent count, shared)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(env.find_tool("perf") is None, reason="perf is not installed"),
              pytest.mark.skipif(os.geteuid() != 0, reason="bpftrace runs as root only")]
needs_bpftrace = pytest.mark.skipif(env.bpftrace_info() is None, reason="bpftrace is not installed")
COUNT_TOLERANCE = 0.05
NO_BPF = {"ORTPROF_BPFTRACE": "", LOADER_ENV: ""}
PROGRAMS = {"libbpf": pytest.param({}, marks=pytest.mark.skipif(
                loader_path()[0] is None, reason="the compiled BPF program is not built (make setup)"), id="libbpf"),
            "bpftrace": pytest.param({LOADER_ENV: ""}, id="bpftrace")}


def old_wheel_demo(*args):
    from ortprof.demo.model import demo_model_path
    if not OLD_ORT_PYTHON.exists():
        pytest.fail(f"{OLD_ORT_PYTHON} missing: `make setup` creates the onnxruntime 1.15.1 venv")
    return [str(OLD_ORT_PYTHON), str(ROOT / "ortprof" / "demo" / "workload.py"),
            "--model", str(demo_model_path("small")), *args]


WHEELS = {
    # the current wheel waits in std::condition_variable (pthread_cond_wait -> futex)
    "current": (lambda *args: [*DEMO, *args], ("condition_variable", "pthread_cond_")),
    # 1.15.1 waits in OrtCondVar on nsync, which calls futex through libc's syscall()
    "1.15.1": (old_wheel_demo, (";syscall",)),
}


@needs_bpftrace
@pytest.mark.parametrize("program", list(PROGRAMS.values()))
@pytest.mark.parametrize("wheel", list(WHEELS))
def test_exact_counts_per_thread_match_perf_stat_and_stacks_reach_the_wait_path(wheel, program, tmp_path,
                                                                                 monkeypatch):
    for name, value in program.items():
        monkeypatch.setenv(name, value)      # the record bench_record starts inherits it
    demo, wait_path = WHEELS[wheel]
    futex, independent, manifest = bench_record.futex_count_check(
        demo("--rate", "20", "--duration", "6", "--allow-spinning", "0"), tmp_path / "run")
    plan = manifest["futex"]
    assert plan["method"] == "bpftrace" and plan["bpf"]["usable"] is True
    assert plan["program"] == ("bpftrace" if program else "libbpf")
    assert 0 < plan["bpftrace_attach_seconds"] < 30
    assert futex["method"] == "bpftrace" and futex["recorded"]
    assert futex["stacks_sampled"] is True and futex["stack_sample_period"] == plan["stack_sample_period"] > 1
    # exact counts, next to perf's own count of the same window
    assert independent > 200, independent
    assert abs(futex["calls"] - independent) <= COUNT_TOLERANCE * independent, (futex["calls"], independent)
    rows = {row["role"]: row for row in futex["threads"]}
    assert {"caller", "intra-op-worker"} <= set(rows), futex["threads"]
    assert sum(row["calls"] for row in futex["threads"]) == futex["calls"]
    worker = rows["intra-op-worker"]
    assert worker["waits"] > 0 and worker["wakes"] + worker["waits"] == worker["calls"]
    assert worker["time_ms_per_s"] > 100     # between requests the worker is blocked in futex
    assert futex["wait_ms_per_s"] <= futex["time_ms_per_s"]
    # sampled stacks: one in N calls, their estimate close to the exact count
    assert futex["stack_samples"] > 10
    estimated = futex["stack_samples"] * futex["stack_sample_period"]
    assert 0.5 * futex["calls"] < estimated < 1.5 * futex["calls"], (estimated, futex["calls"])
    stacks = [item["stack"] for item in futex["top_stacks"][:3]]
    assert any(marker in stack for stack in stacks for marker in wait_path), stacks
    assert any("ort!" in stack or "onnxruntime" in stack for stack in stacks), stacks


def assert_worker_futex_counted(report):
    futex = report["futex"]
    assert futex["method"] == "bpftrace" and futex["recorded"], futex
    rows = {row["role"]: row for row in futex["threads"]}
    assert rows.get("intra-op-worker", {}).get("calls", 0) > 50, futex["threads"]


@needs_bpftrace
def test_attaching_to_a_running_process_counts_its_futex_calls(tmp_path):
    # bpftrace starts before the target is known; --pid names it right away
    workload = subprocess.Popen([*DEMO, "--rate", "20", "--duration", "30", "--allow-spinning", "0"],
                                stdout=subprocess.DEVNULL)
    try:
        time.sleep(3)   # model load and first runs
        subprocess.run([ORTPROF, "record", "-q", "--pid", str(workload.pid), "--duration", "2",
                        "-o", str(tmp_path / "run")], check=True, timeout=120)
        assert_worker_futex_counted(report_json(tmp_path / "run"))
    finally:
        workload.kill()
        workload.wait()


@needs_bpftrace
def test_ort_in_a_child_process_is_the_one_counted(tmp_path):
    # the launched process only starts the one that runs ORT: the counters follow the hook to it
    launcher = f"import subprocess, sys; sys.exit(subprocess.call({[*DEMO, '--rate', '20', '--allow-spinning', '0']!r}))"
    subprocess.run([ORTPROF, "record", "-q", "--duration", "2", "-o", str(tmp_path / "run"), "--",
                    sys.executable, "-c", launcher], check=True, timeout=120)
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["profiled_pid"] != manifest["pid"], "the demo ran in the launched process itself"
    assert_worker_futex_counted(report_json(tmp_path / "run"))


def test_bpf_not_usable_falls_back_to_perf_tracepoints_and_says_so(tmp_path):
    done = subprocess.run([ORTPROF, "record", "-q", "--duration", "3", "-o", str(tmp_path / "run"), "--",
                           *DEMO, "--rate", "20", "--allow-spinning", "0"],
                          capture_output=True, text=True, timeout=180, env={**os.environ, **NO_BPF})
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    plan = manifest["futex"]
    assert plan["method"] == "perf-tracepoints" and plan["stack_sample_period"] == 1
    assert plan["bpf"]["usable"] is False and "bpftrace is not installed" in plan["bpf"]["reason"]
    assert "bpftrace" in plan["bpf"]["fix"]
    assert "bpftrace" not in manifest["profilers"]
    assert "sys_exit_futex" in " ".join(manifest["profilers"]["perf"]["command"])
    assert not (tmp_path / "run" / "futex-bpf.jsonl").exists()
    report = report_json(tmp_path / "run")
    futex = report["futex"]
    assert futex["method"] == "perf-tracepoints" and futex["stacks_sampled"] is False
    assert futex["calls"] > 100 and futex["stack_samples"] == futex["calls"]
    assert any("traced by perf, one event per call" in note and "bpftrace is not installed" in note
               for note in report["notes"]), report["notes"]


def test_futex_method_perf_is_the_old_per_call_tracing(tmp_path):
    manifest, _ = record_demo(tmp_path / "run", "--allow-spinning", "0", duration=2, rate=20,
                              record_args=("--futex-method", "perf"))
    assert manifest["futex"]["method"] == "perf-tracepoints"
    assert manifest["futex"]["bpf"]["reason"] == "not tried: --futex-method perf"
    assert report_json(tmp_path / "run")["futex"]["method"] == "perf-tracepoints"


def test_futex_method_bpf_without_bpftrace_is_one_line_and_the_fix(tmp_path):
    done = subprocess.run([ORTPROF, "record", "-q", "--futex-method", "bpf", "--duration", "1",
                           "-o", str(tmp_path / "run"), "--", sys.executable, "-c", "pass"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **NO_BPF})
    assert done.returncode == EXIT_ENVIRONMENT
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("ortprof: error: --futex-method bpf: bpftrace is not installed")
    assert lines[0].endswith(f"fix: {bpftrace_install_command()}")


@needs_bpftrace
def test_ctrl_c_keeps_the_counts_of_the_window(tmp_path):
    out = tmp_path / "run"
    record = subprocess.Popen([ORTPROF, "record", "-q", "--duration", "60", "-o", str(out), "--",
                               *DEMO, "--rate", "20", "--allow-spinning", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if json.loads((out / "run.json").read_text()).get("status") == "recording":
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    time.sleep(2.5)
    record.send_signal(signal.SIGINT)
    record.communicate(timeout=120)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "interrupted" and 2 <= manifest["window"]["seconds"] < 10
    assert "ortprof-futex-end" in (out / "futex-bpf.jsonl").read_text()
    futex = report_json(out)["futex"]
    assert futex["method"] == "bpftrace"
    # ~2000 calls a second at 20 requests/s with spinning off
    assert futex["calls_per_s"] > 200, futex
