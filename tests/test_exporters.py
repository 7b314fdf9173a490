"""Exporters behind one interface: registry, golden output on captured profiles, CLI plumbing."""
import io
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from conftest import FIXTURES, VENV_BIN
from golden_files import check_golden
from ortprof import exporters
from ortprof.analysis.loading import load_perf_script
from ortprof.analysis.report import analyze
from ortprof.errors import InputError

CAPTURE = "ort-1.15.1-debug-default.perf-script.txt.xz"
SMALL_CAPTURE = "ort-1.15.1-relwithdebinfo-nospin.perf-script-no-inline.txt.xz"


def analyze_capture(name):
    loaded = load_perf_script(FIXTURES / name)
    report = analyze(loaded)
    report.run = name    # golden files must not depend on where the clone is
    return loaded.profile, report


@pytest.fixture(scope="module")
def analyzed():
    return analyze_capture(CAPTURE)


@pytest.fixture(scope="module")
def small():
    return analyze_capture(SMALL_CAPTURE)


def render(name, profile, report, **options):
    exporter = exporters.get(name)
    if options:
        exporter = exporter.configure(**options)
    stream = io.BytesIO() if exporter.binary else io.StringIO()
    exporter.write(profile, report, stream)
    return stream.getvalue()


def test_every_registered_format_has_the_interface():
    for name in exporters.available():
        exporter = exporters.get(name)
        assert exporter.name == name
        assert exporter.suffix.startswith(".") and isinstance(exporter.binary, bool) and exporter.description
        assert callable(exporter.write)


def test_unknown_format_is_one_clear_error():
    with pytest.raises(InputError, match="unknown format 'svg'; one of terminal, json"):
        exporters.parse_format_spec("svg=out.svg")


def test_json_golden(analyzed):
    check_golden("report-1.15.1-debug-default.json", render("json", *analyzed))


def test_terminal_golden(analyzed):
    check_golden("report-1.15.1-debug-default.txt", render("terminal", *analyzed))


@pytest.mark.parametrize("by", ["thread", "role", "process"])
def test_folded_golden(small, by):
    check_golden(f"folded-1.15.1-relwithdebinfo-nospin-{by}.folded", render("folded", *small, by=by))


@pytest.mark.parametrize("by", ["thread", "role", "process"])
def test_folded_weights_add_up_to_the_profile(analyzed, by):
    profile, report = analyzed
    lines = render("folded", profile, report, by=by).splitlines()
    roots = Counter()
    total_ms = 0
    for line in lines:
        stack, weight = line.rsplit(" ", 1)
        roots[stack.split(";", 1)[0]] += int(weight)
        total_ms += int(weight)
    profile_ms = sum(thread.ns for thread in profile.threads.values()) / 1e6
    assert total_ms == pytest.approx(profile_ms, rel=0.05)   # per-line rounding to whole ms
    if by == "role":
        assert set(roots) == {t.role for t in profile.threads.values()}
    elif by == "thread":
        assert set(roots) == {f"{t.role}-{t.tid}" for t in profile.threads.values()}
    else:
        assert "intra-op-worker" not in roots and all(not root.startswith("caller") for root in roots)


def run_cli(*args):
    return subprocess.run([str(VENV_BIN / "ortprof"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.live
def test_two_formats_on_stdout_is_one_clear_error(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"schema": "ortprof.run/1", "command": ["x"]}))
    result = run_cli("report", str(tmp_path), "--format", "json", "--format", "folded")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        "ortprof: error: json and folded both want stdout: give all but one a file (--format NAME=FILE)"]


@pytest.mark.live
def test_unwritable_output_fails_before_decoding(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"schema": "ortprof.run/1", "command": ["x"]}))
    result = run_cli("export", str(tmp_path), "--format", "json", "-o", str(tmp_path / "no" / "such" / "dir.json"))
    assert result.returncode == 3 and "cannot write" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.live
def test_report_formats_to_files_and_stdout(tmp_path):
    """A run without perf data (only run.json): every text format still writes, stdout gets one."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"schema": "ortprof.run/1", "command": ["python", "app.py"],
                                              "window": {"start_mono": 1.0, "end_mono": 3.0, "seconds": 2.0}}))
    result = run_cli("report", str(run), "--format", f"json={tmp_path / 'r.json'}",
                     "--format", f"folded={tmp_path / 'r.folded'}", "--format", "terminal")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["empty_sections"]["totals"].startswith("no perf data")
    assert (tmp_path / "r.folded").read_text() == ""
    assert "empty:" in result.stdout
