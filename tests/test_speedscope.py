"""`--format speedscope`: speedscope's own schema and bundle accept the file, a fixture export matches
its golden file, and per-thread totals agree with the report, on a fixture and on a live recording."""
import base64
import dataclasses
import io
import json
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from browser import browser_page
from golden_files import check_golden
from live import record_demo, report_json, run_ortprof
from ortprof import __version__
from ortprof.analysis.loading import load_perf_script
from ortprof.analysis.report import analyze
from ortprof.exporters import get
from ortprof.exporters.speedscope import NO_STACK, speedscope_document

TESTS = Path(__file__).resolve().parent
RELEASE = TESTS / "js" / "node_modules" / "speedscope" / "dist" / "release"
FIXTURE = TESTS / "fixtures" / "symbols-1.31.1-default.perf-script.txt"


def fixture_export(path=FIXTURE, change=None):
    """(profile, report, document) of a perf-script fixture; `change(profile)` edits the profile first."""
    loaded = load_perf_script(path)
    report = analyze(loaded)
    if change:
        change(loaded.profile)
    stream = io.StringIO()
    get("speedscope").write(loaded.profile, report, stream)
    return loaded.profile, report, json.loads(stream.getvalue())


@pytest.fixture(scope="module")
def exported():
    return fixture_export()


def schema_errors(document):
    schema = json.loads((RELEASE / "file-format-schema.json").read_text())
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in Draft7Validator(schema).iter_errors(document)]


def cpu_ms_by_name(document):
    """Profile name -> sum of the weights of its non-idle samples (ms)."""
    return {entry["name"]: sum(weight for stack, weight in zip(entry["samples"], entry["weights"]) if stack)
            for entry in document["profiles"]}


def check_structure(document):
    """What the schema cannot say and speedscope's importer relies on."""
    frame_count = len(document["shared"]["frames"])
    assert document["activeProfileIndex"] == 0
    assert document["exporter"].startswith("ortprof ")
    for entry in document["profiles"]:
        assert entry["type"] == "sampled" and entry["unit"] == "milliseconds"
        assert len(entry["samples"]) == len(entry["weights"])
        assert all(0 <= index < frame_count for stack in entry["samples"] for index in stack)
        assert all(weight > 0 for weight in entry["weights"])
        assert entry["endValue"] - entry["startValue"] == pytest.approx(sum(entry["weights"]), abs=1e-6)


def open_in_speedscope(document, tmp_path):
    """Load `document` the way `speedscope FILE` does (file:// index.html#localProfilePath=loader.js);
    returns (toolbar text, body text, console errors)."""
    loader = tmp_path / "load-profile.js"
    encoded = base64.b64encode(json.dumps(document).encode()).decode()
    loader.write_text(f"speedscope.loadFileFromBase64('profile.speedscope.json', {json.dumps(encoded)})")
    with browser_page() as (page, errors):
        page.on("dialog", lambda dialog: (errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        page.goto(f"{RELEASE.as_uri()}/index.html#localProfilePath={loader}")
        page.wait_for_function("document.body.innerText.includes('(1/') || "
                               "document.body.innerText.includes('went wrong')", timeout=20_000)
        page.screenshot(path=str(tmp_path / "speedscope.png"))
        body = page.inner_text("body")
        return body, errors


# ---- the file format -------------------------------------------------------------------

def test_fixture_export_is_valid_for_speedscopes_schema(exported):
    _, _, document = exported
    assert schema_errors(document) == []
    check_structure(document)


def test_schema_check_catches_a_broken_file(exported):
    broken = json.loads(json.dumps(exported[2]))
    del broken["profiles"][0]["weights"]
    broken["shared"]["frames"][0] = {"file": "no name"}
    assert len(schema_errors(broken)) >= 2


def test_one_profile_per_thread_busiest_first_with_its_cpu_time(exported):
    profile, report, document = exported
    threads = sorted(profile.threads.values(), key=lambda thread: -thread.ns)
    assert [entry["name"] for entry in document["profiles"]] == [f"{t.role} {t.tid}" for t in threads]
    totals = cpu_ms_by_name(document)
    for thread in threads:
        assert totals[f"{thread.role} {thread.tid}"] * 1e6 == pytest.approx(thread.ns, abs=1)
        row = next(row for row in report.threads if row.tid == thread.tid)
        assert totals[f"{thread.role} {thread.tid}"] == pytest.approx(row.cpu_pct * report.window_seconds * 10,
                                                                      abs=0.05 * report.window_seconds + 0.01)


def test_samples_sit_at_their_time(exported):
    """Time Order view: each sample ends where perf took it, within one sample period (gaps shorter
    than a period are not filled), and idle gaps are empty samples."""
    profile, _, document = exported
    start = profile.span()[0]
    by_name = {entry["name"]: entry for entry in document["profiles"]}
    for thread in profile.threads.values():
        entry = by_name[f"{thread.role} {thread.tid}"]
        position = entry["startValue"]
        ends = []
        for stack, weight in zip(entry["samples"], entry["weights"]):
            position += weight
            if stack:
                ends.append(position)
        assert len(ends) == thread.samples
        names_of = [[document["shared"]["frames"][i]["name"] for i in stack] for stack in entry["samples"] if stack]
        assert names_of == [profile.names(stack_id) for stack_id in thread.stack_ids]   # time order, root first
        for end, time, ns in zip(ends, thread.times, thread.weights_ns):
            assert end == pytest.approx((time - start) * 1000, abs=ns / 1e6)
    caller = by_name[next(f"{t.role} {t.tid}" for t in profile.threads.values() if t.role == "caller")]
    assert [] in caller["samples"]    # the caller sleeps between requests


def test_frames_carry_source_line_or_module(exported):
    profile, _, document = exported
    frames = document["shared"]["frames"]
    assert [frame["name"] for frame in frames] == [frame.name for frame in profile.frames]
    assert all(frame["file"] == profile.mapping_of(i).path for i, frame in enumerate(frames))

    def add_source(changed):
        changed.frames[2].source = "onnxruntime/core/common/threadpool.cc:541"
    _, _, with_source = fixture_export(change=add_source)
    assert with_source["shared"]["frames"][2] == {"name": profile.frames[2].name,
                                                  "file": "onnxruntime/core/common/threadpool.cc", "line": 541}


def test_stackless_samples_are_cpu_not_idle():
    def drop_first_stack(changed):
        changed.stacks[0] = dataclasses.replace(changed.stacks[0], frames=())
    profile, _, document = fixture_export(change=drop_first_stack)
    frames = document["shared"]["frames"]
    assert frames[-1] == {"name": NO_STACK}
    assert any(stack == [len(frames) - 1] for entry in document["profiles"] for stack in entry["samples"])
    assert schema_errors(document) == []
    for thread in profile.threads.values():
        assert cpu_ms_by_name(document)[f"{thread.role} {thread.tid}"] * 1e6 == pytest.approx(thread.ns, abs=1)


@pytest.mark.live
def test_no_samples_is_one_clear_error(tmp_path):
    """A run with no perf samples (perf.data missing): one line and exit 3, not an empty file speedscope rejects."""
    run_dir = tmp_path / "no-perf"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"schema": "ortprof.run/1", "status": "completed",
                                                  "command": ["python", "serve.py"]}))
    result = run_ortprof("export", str(run_dir), "--format", "speedscope", "-o", str(tmp_path / "out.json"))
    assert result.returncode == 3
    assert result.stderr.strip().count("\n") == 0 and "no perf data in this run" in result.stderr
    assert "Traceback" not in result.stderr


def test_golden(exported):
    document = dict(exported[2])
    assert document.pop("exporter") == f"ortprof {__version__}"    # a release does not change the golden file
    check_golden(f"speedscope-{FIXTURE.name.removesuffix('.perf-script.txt')}.json",
                 json.dumps(document, indent=1) + "\n")


# ---- speedscope itself -----------------------------------------------------------------

@pytest.mark.live
def test_speedscope_opens_the_fixture_export(exported, tmp_path):
    document = exported[2]
    body, errors = open_in_speedscope(document, tmp_path)
    assert errors == []
    assert "went wrong" not in body
    first = document["profiles"][0]["name"]
    assert f"{first} (1/{len(document['profiles'])})" in body


@pytest.mark.live
def test_speedscope_reports_a_broken_file(exported, tmp_path):
    """The check above can fail: speedscope rejects samples and weights of different lengths."""
    broken = json.loads(json.dumps(exported[2]))
    broken["profiles"][0]["weights"].pop()
    body, _ = open_in_speedscope(broken, tmp_path)
    assert "went wrong" in body


# ---- live ------------------------------------------------------------------------------

@pytest.mark.slow
def test_live_export_and_report_format(tmp_path):
    run_dir = tmp_path / "run"
    record_demo(run_dir, duration=3)
    exported_path, reported_path = tmp_path / "export.json", tmp_path / "report.json"
    run_ortprof("export", str(run_dir), "--format", "speedscope", "-o", str(exported_path), check=True)
    result = run_ortprof("report", str(run_dir), "--format", f"speedscope={reported_path}")
    assert result.returncode in (0, 1), result.stderr
    document = json.loads(exported_path.read_text())
    assert json.loads(reported_path.read_text()) == document
    assert schema_errors(document) == []
    check_structure(document)

    report = report_json(run_dir)
    sampled = [row for row in report["threads"] if row["samples"]]
    cpu_pct_by_name = {f"{row['role']} {row['tid']}": row["cpu_pct"] for row in sampled}
    names = [entry["name"] for entry in document["profiles"]]
    assert sorted(names) == sorted(cpu_pct_by_name)
    in_file_order = [cpu_pct_by_name[name] for name in names]
    assert in_file_order == sorted(in_file_order, reverse=True)     # busiest first
    assert any(row["role"] == "intra-op-worker" for row in sampled)
    window = report["window_seconds"]
    totals = cpu_ms_by_name(document)
    for row in sampled:
        assert totals[f"{row['role']} {row['tid']}"] == pytest.approx(
            row["cpu_pct"] * window * 10, abs=0.05 * window + 0.005 * row["cpu_pct"] + 0.01)
    assert document["name"].startswith(run_dir.name)

    body, errors = open_in_speedscope(document, tmp_path)
    assert errors == [] and "went wrong" not in body
    assert document["profiles"][0]["name"] in body
