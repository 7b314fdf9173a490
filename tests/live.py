"""Helpers for tests that record the real demo under the real perf."""
import json
import os
import subprocess
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
ORTPROF = str(VENV_BIN / "ortprof")
DEMO = [sys.executable, "-m", "ortprof.demo"]


def run_ortprof(*args, env=None, timeout=180, check=False):
    result = subprocess.run([ORTPROF, *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"ortprof {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def record_demo(out_dir, *demo_args, duration=5, record_args=(), rate=10):
    """Record the demo at `rate` req/s into `out_dir`; returns (manifest, completed process)."""
    result = run_ortprof("record", "-q", "--duration", str(duration), "-o", str(out_dir), *record_args, "--",
                         *DEMO, "--rate", str(rate), *demo_args, check=True)
    from schema_check import assert_valid_run
    return assert_valid_run(json.loads((Path(out_dir) / "run.json").read_text())), result


def report_json(run_dir, *args, allowed_exits=(0, 1)):
    """The report of `run_dir` as JSON, checked against the shipped schema."""
    from schema_check import assert_valid_report
    result = run_ortprof("report", str(run_dir), "--json", *args)
    assert result.returncode in allowed_exits, result.stderr
    return assert_valid_report(json.loads(result.stdout))


def by_role(report, role):
    return [t for t in report["threads"] if t["role"] == role]


def own_latencies(log, window=None):
    """The ms of each run a test service logged as `run MS [START_NS]` (START_NS: CLOCK_MONOTONIC);
    with `window` (start, end monotonic seconds), only the runs that started inside it."""
    latencies = []
    for line in log.read_text().splitlines():
        fields = line.split()
        if fields[:1] != ["run"]:
            continue
        if window is not None and len(fields) > 2 and not window[0] <= int(fields[2]) / 1e9 <= window[1]:
            continue
        latencies.append(float(fields[1]))
    return latencies
