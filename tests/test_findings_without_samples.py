"""Findings whose evidence needs no perf samples are produced on any run."""
import json
import shutil
import subprocess

import pytest

from live import record_demo, report_json
from ortprof.analysis.report import build_report
from ortprof.recording.rundir import RunDirectory


@pytest.fixture(scope="module")
def unprofiled_quota_run(tmp_path_factory):
    """The demo (defaults: 2-thread spinning pool) under a 0.5-CPU quota, recorded with --profiler none."""
    out = tmp_path_factory.mktemp("quota") / "run"
    record_demo(out, duration=4, rate=20, record_args=("--profiler", "none", "--cpus", "0.5"))
    return out


@pytest.mark.slow
def test_quota_findings_without_perf(unprofiled_quota_run):
    report = report_json(unprofiled_quota_run, allowed_exits=(0,))
    ids = {f["id"] for f in report["findings"]}
    assert {"cpu-throttling", "thread-oversubscription"} <= ids
    assert report["samples"] == 0 and report["totals"]["cpu_pct"] is None
    assert report["sessions"][0]["runs"] > 0
    # Which sections are empty, and why.
    assert "no perf data" in report["empty_sections"]["hot_paths"]
    assert "not use" in report["futex"]["missing_reason"] and report["futex"]["recorded"] is False
    # Without py-spy either, the spinning worker still shows as a busy thread nobody profiled.
    assert "busy-native-thread" in ids


@pytest.mark.slow
def test_debug_build_from_the_modules_dwarf(unprofiled_quota_run, tmp_path):
    """A native module compiled -O0, installed by hand (no --ort-build), gets debug-build."""
    source = tmp_path / "kernel.c"
    source.write_text("int add(int a, int b) { return a + b; }\n")
    module = tmp_path / "onnxruntime_pybind11_state.so"
    subprocess.run(["gcc", "-O0", "-g", "-shared", "-fPIC", "-o", str(module), str(source)], check=True)
    run = tmp_path / "run"
    shutil.copytree(unprofiled_quota_run, run)
    manifest = json.loads((run / "run.json").read_text())
    manifest["environment"]["ort"].update(native_module=str(module), build_id=None)
    manifest.pop("ort_build", None)
    (run / "run.json").write_text(json.dumps(manifest))
    _, report = build_report(RunDirectory(run))
    finding = next(f for f in report.findings if f.id == "debug-build")
    assert "-O0" in finding.evidence["producer"]
    assert report.ort.optimized is False

    optimized = tmp_path / "optimized.so"
    subprocess.run(["gcc", "-O2", "-g", "-shared", "-fPIC", "-o", str(optimized), str(source)], check=True)
    manifest["environment"]["ort"]["native_module"] = str(optimized)
    (run / "run.json").write_text(json.dumps(manifest))
    _, report = build_report(RunDirectory(run))
    assert "debug-build" not in {f.id for f in report.findings} and report.ort.optimized is True
