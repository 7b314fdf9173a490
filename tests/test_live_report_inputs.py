"""`ortprof report` on damaged or incomplete runs: a clear message and what can still be shown."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from live import DEMO, record_demo, report_json, run_ortprof

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("good") / "run"
    record_demo(out, duration=3)
    return out


def copy_run(run, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


def errors_of(result):
    return [line for line in result.stderr.splitlines() if line.startswith("ortprof: error:")]


def test_truncated_perf_data_partial_report_and_one_line(good_run, tmp_path):
    run = copy_run(good_run, tmp_path, "truncated")
    os.truncate(run / "perf.data", (run / "perf.data").stat().st_size // 2)
    result = run_ortprof("report", str(run), "--json")
    assert result.returncode == 3
    (error,) = errors_of(result)
    assert "could not be decoded" in error and "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["sessions"][0]["runs"] > 0            # latency from the hook
    assert report["totals"]["proc_cpu_pct"] > 10       # CPU from /proc


def test_perf_killed_mid_recording(tmp_path):
    """A perf record killed with SIGKILL leaves a file whose data size is 0."""
    workload = subprocess.Popen([*DEMO, "--rate", "10", "--duration", "15"], stdout=subprocess.DEVNULL)
    time.sleep(3)   # ORT loaded: --pid refuses a process without it
    out = tmp_path / "run"
    recorder = subprocess.Popen([sys.executable, "-m", "ortprof", "record", "-q", "--pid", str(workload.pid),
                                 "--duration", "30", "-o", str(out)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20   # perf starts after the recorder's probe and warm-up check
        perf_pids = []
        while not perf_pids and time.monotonic() < deadline:
            time.sleep(0.5)
            perf_pids = subprocess.run(["pgrep", "-f", f"perf record -o {out}"], capture_output=True,
                                       text=True).stdout.split()
        assert perf_pids, "perf record was not running"
        time.sleep(1)   # let it write samples
        for pid in perf_pids:
            os.kill(int(pid), signal.SIGKILL)
        recorder.wait(timeout=60)
    finally:
        workload.kill()
        recorder.kill()
    manifest = json.loads((out / "run.json").read_text())
    assert any("perf stopped early" in note for note in manifest["notes"])
    result = run_ortprof("report", str(out))
    assert result.returncode == 3
    (error,) = errors_of(result)
    assert "did not finish writing it" in error


def test_run_without_perf_data(tmp_path):
    out = tmp_path / "run"
    run_ortprof("record", "-q", "--profiler", "py-spy", "--duration", "2", "-o", str(out), "--",
                *DEMO, "--rate", "10", check=True)
    report = report_json(out, allowed_exits=(0,))
    assert "no perf data" in report["empty_sections"]["totals"]
    assert report["totals"]["cpu_pct"] is None and report["hot_paths"] == []
    assert report["sessions"][0]["p50_ms"] > 0 and report["totals"]["proc_cpu_pct"] > 0
    # py-spy's view is used: the caller thread is seen inside run().
    python = report["python"]
    assert python["source"] == "py-spy"
    caller_tids = set(report["sessions"][0]["caller_tids"])
    (caller,) = [t for t in python["threads"] if t["tid"] in caller_tids]
    assert caller["in_run_pct"] > 0
    # Findings that need no samples still run: the spinning pool worker is a busy thread
    # Python does not know (default options spin ~40% of a core at 10 requests/s).
    busy = next(f for f in report["findings"] if f["id"] == "busy-native-thread")
    assert busy["evidence"]["tid"] not in caller_tids and busy["evidence"]["proc_cpu_pct"] >= 10


def test_binaries_gone(tmp_path):
    """Recorded with an ORT package that is then deleted, as on another machine."""
    import onnxruntime
    site = tmp_path / "site"
    shutil.copytree(os.path.dirname(onnxruntime.__file__), site / "onnxruntime")
    out = tmp_path / "run"
    run_ortprof("record", "-q", "--duration", "3", "-o", str(out), "--", *DEMO, "--rate", "10",
                env={"PYTHONPATH": str(site)}, check=True)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["environment"]["ort"]["path"].startswith(str(site))
    run_ortprof("report", str(out), "--json", check=True)   # fills the symbol cache, as a first report would
    shutil.rmtree(site)
    # The symbol cache of that build-id (made by `ortprof report` before, on the recording machine) still
    # names functions and finds the spin; without it, the report says that spin cannot be told apart.
    with_cache = json.loads(run_ortprof("report", str(out), "--json", check=True).stdout)
    assert any("is gone" in note for note in with_cache["notes"])
    assert any("using the symbol cache" in note for note in with_cache["notes"])
    assert "spin-wait" in [f["id"] for f in with_cache["findings"]]
    result = run_ortprof("report", str(out), "--json", env={"ORTPROF_CACHE_DIR": str(tmp_path / "empty-cache")})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert any("no symbol cache" in note for note in report["notes"])
    assert report["samples"] > 0 and report["sessions"][0]["runs"] > 0


def test_hot_spots_get_source_lines_from_dwarf(tmp_path):
    """file:line for the hottest addresses, from the DWARF line table of the sampled binary."""
    source = tmp_path / "hot.c"
    source.write_text(
        "#include <time.h>\n"
        "volatile unsigned long sink;\n"
        "static void spin_here(unsigned long n) {\n"
        "    for (unsigned long i = 0; i < n; i++)\n"
        "        sink += i * 2654435761u;   /* line 5: the hot line */\n"
        "}\n"
        "int main(void) {\n"
        "    time_t end = time(0) + 4;\n"
        "    while (time(0) < end) spin_here(1000000);\n"
        "    return 0;\n"
        "}\n")
    binary = tmp_path / "hot"
    subprocess.run(["gcc", "-g", "-O1", "-o", str(binary), str(source)], check=True)
    out = tmp_path / "run"
    run_ortprof("record", "-q", "--delay", "0.3", "--duration", "2", "--no-futex", "-o", str(out), "--",
                str(binary), check=True)
    report = json.loads(run_ortprof("report", str(out), "--json", check=True).stdout)
    hottest = report["hot_spots"][0]
    # Most of the program's sampled CPU sits on the hot line (its share of a core depends on the machine's load).
    assert hottest["dso"] == str(binary) and hottest["cpu_pct"] > 0.5 * report["totals"]["cpu_pct"]
    assert hottest["source"] in (f"{source}:4", f"{source}:5")
