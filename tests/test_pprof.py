"""--format pprof: gzipped profile.proto, read back by decoders that share no code with ortprof:
`go tool pprof` (Google's) and the npm pprof-format package (Datadog's), plus a golden text
dump of small fixture profiles (regenerate with ORTPROF_UPDATE_GOLDEN=1).
"""
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import FIXTURES
from golden_files import check_golden
from ortprof.analysis.loading import load_perf_script
from ortprof.analysis.pipeline import stack_category
from ortprof.analysis.report import analyze, build_report
from ortprof.exporters import get, pprof_proto
from ortprof.recording.rundir import RunDirectory
from ortprof.symbols.elfinfo import read_elf_info

JS = Path(__file__).resolve().parent / "js"
GOLDEN_FIXTURES = ["symbols-1.31.1-default.perf-script.txt", "symbols-1.15.1-debug-nospin.perf-script.txt"]
# The symbolized debug build: a spinning worker and a caller, six categories.
FIXTURE_PROFILES = GOLDEN_FIXTURES + ["ort-1.15.1-debug-default.perf-script.txt.xz"]
EXPORTER = get("pprof")


def export(profile, report, exporter=EXPORTER):
    stream = io.BytesIO()
    exporter.write(profile, report, stream)
    return stream.getvalue()


def fixture_export(tmp_path, name, exporter=EXPORTER):
    loaded = load_perf_script(FIXTURES / name)
    report = analyze(loaded)
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(export(loaded.profile, report, exporter))
    return loaded.profile, report, path


def go_pprof(path, *args):
    if shutil.which("go") is None:
        pytest.skip("go is not installed (make test-tools)")
    home = Path(path).parent / "go-home"
    env = dict(os.environ, HOME=str(home), GOCACHE=str(home / "cache"), GOPATH=str(home / "gopath"),
               GOFLAGS="", GOTOOLCHAIN="local")
    result = subprocess.run(["go", "tool", "pprof", *args, str(path)], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def node_decode(path):
    if shutil.which("node") is None or not (JS / "node_modules" / "pprof-format").is_dir():
        pytest.skip("node or tests/js/node_modules missing (make test-tools)")
    result = subprocess.run(["node", str(JS / "decode-pprof.mjs"), str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def go_raw_samples(text):
    """`go tool pprof -raw` samples -> [(count, ns, {label: value})]."""
    samples = []
    section = text.split("Samples:", 1)[1].split("Locations", 1)[0]
    for line in section.splitlines():
        value_line = re.match(r"\s+(\d+)\s+(\d+):", line)
        if value_line:
            samples.append((int(value_line.group(1)), int(value_line.group(2)), {}))
        elif samples:
            for key, value in re.findall(r"(\w+):\[([^\]]*)\]", line):
                samples[-1][2][key] = value
    return samples


def expected_by_label(profile, report):
    """What each label value should total (ns), from the profile the exporter was given."""
    expected = defaultdict(Counter)
    for tid, thread in profile.threads.items():
        for stack_id, ns in thread.ns_by_stack.items():
            expected["thread_id"][str(tid)] += ns
            expected["thread_role"][thread.role] += ns
            expected["category"][stack_category(profile, stack_id, thread.role)] += ns
    return expected


def report_ns(report, rows):
    """ns the report's CPU % stand for over its window (rounded to 0.01 % a thread)."""
    return sum(rows) / 100 * report.window_seconds * 1e9


def report_tolerance(report, threads):
    return 0.006 / 100 * report.window_seconds * 1e9 * threads + 1


@pytest.mark.parametrize("name", FIXTURE_PROFILES)
@pytest.mark.live
def test_go_pprof_raw_totals_and_labels_match_the_report(tmp_path, name):
    profile, report, path = fixture_export(tmp_path, name)
    text = go_pprof(path, "-raw")
    assert "PeriodType: cpu nanoseconds" in text
    assert "samples/count cpu/nanoseconds[dflt]" in text
    samples = go_raw_samples(text)
    # One pprof sample per (thread, stack).
    assert len(samples) == sum(len(thread.ns_by_stack) for thread in profile.threads.values())
    assert sum(ns for _, ns, _ in samples) == sum(thread.ns for thread in profile.threads.values())
    assert sum(count for count, _, _ in samples) == profile.cpu_samples
    decoded = defaultdict(Counter)
    for _, ns, labels in samples:
        assert set(labels) >= {"thread_id", "thread_role", "category"}
        for key, value in labels.items():
            decoded[key][value] += ns
    assert decoded == expected_by_label(profile, report)
    # And the same figures the report shows, per thread and per category.
    for row in report.threads:
        assert decoded["thread_id"][str(row.tid)] == pytest.approx(report_ns(report, [row.cpu_pct]),
                                                                  abs=report_tolerance(report, 1))
    for category, ns in decoded["category"].items():
        shown = [row.categories[category] for row in report.threads]
        assert ns == pytest.approx(report_ns(report, shown), abs=report_tolerance(report, len(shown)))


@pytest.mark.parametrize("name", FIXTURE_PROFILES)
@pytest.mark.live
def test_go_pprof_tagfocus_on_a_role_gives_the_role_total(tmp_path, name):
    profile, report, path = fixture_export(tmp_path, name)
    for role in {row.role for row in report.threads}:
        text = go_pprof(path, "-top", "-unit=ns", "-nodefraction=0", "-nodecount=1000000",
                        f"-tagfocus=thread_role={role}")
        shown = int(re.search(r"Showing nodes accounting for (\d+)ns", text).group(1))
        assert shown == sum(t.ns for t in profile.threads.values() if t.role == role)
        cpu = [row.cpu_pct for row in report.threads if row.role == role]
        assert shown == pytest.approx(report_ns(report, cpu), abs=report_tolerance(report, len(cpu)))


@pytest.mark.parametrize("name", FIXTURE_PROFILES)
@pytest.mark.live
def test_pprof_format_decoder_reads_types_period_duration_and_label_totals(tmp_path, name):
    profile, report, path = fixture_export(tmp_path, name)
    decoded = node_decode(path)
    assert decoded["problems"] == []
    assert decoded["sample_types"] == ["samples/count", "cpu/nanoseconds"]
    assert decoded["period_type"] == "cpu/nanoseconds"
    total_ns = sum(thread.ns for thread in profile.threads.values())
    assert decoded["total"] == [profile.cpu_samples, total_ns]
    assert decoded["period"] == round(total_ns / profile.cpu_samples)
    assert decoded["duration_nanos"] == round(report.window_seconds * 1e9)
    # Locations: the frames, perf's "(inlined)" ones folded into their caller's location.
    inlined = sum(1 for f in profile.frames if profile.mappings[f.mapping].path == "inlined")
    assert decoded["locations"] <= len(profile.frames) - inlined + 1
    by_label = {key: {value: ns for value, (_, ns) in values.items()} for key, values in decoded["by_label"].items()}
    assert by_label == {key: dict(values) for key, values in expected_by_label(profile, report).items()}
    # Leaf functions carry the names the report ranks by self time.
    for function in report.top_functions.self[:5]:
        assert decoded["leaves"][function.function] == pytest.approx(report_ns(report, [function.cpu_pct]),
                                                                    abs=report_tolerance(report, 1))


@pytest.mark.parametrize("name", ["symbols-1.31.1-default.perf-script.txt",
                                  "ort-1.15.1-debug-default.perf-script.txt.xz"])
@pytest.mark.live
def test_mappings_carry_files_and_build_ids_read_from_the_files_here(tmp_path, name):
    profile, report, path = fixture_export(tmp_path, name)
    mappings = {m["file"]: m["build_id"] for m in node_decode(path)["mappings"]}
    assert set(mappings) == {mapping.path for mapping in profile.mappings if mapping.path != "inlined"}
    for mapping in profile.mappings:
        if mapping.kind == "ort":
            # No recorded build-id for a bare perf script: a local ORT module may be another build.
            assert mappings[mapping.path] == ""
        elif os.path.isfile(mapping.path):
            assert mappings[mapping.path] == read_elf_info(mapping.path).build_id
            # GNU build-ids only (libstdc++ also has stapsdt notes of the same note type).
            assert re.fullmatch(r"[0-9a-f]{16,}", mappings[mapping.path])
    assert any(mappings.values())
    # The first mapping (pprof's "main binary") is the ORT module.
    assert "File: onnxruntime" in go_pprof(path, "-top")
    _, _, bare = fixture_export(tmp_path, "symbols-1.31.1-default.perf-script.txt",
                                replace(EXPORTER, local_build_ids=False))
    assert not any(m["build_id"] for m in node_decode(bare)["mappings"])


@pytest.mark.live
def test_source_lines_become_function_files_and_line_numbers(tmp_path):
    loaded = load_perf_script(FIXTURES / "symbols-1.15.1-debug-nospin.perf-script.txt")
    report = analyze(loaded)
    frame = next(f for f in loaded.profile.frames if f.symbolized and loaded.profile.mapping_of(f.id).kind == "ort")
    frame.source = "/src/onnxruntime/core/common/threadpool.cc:123"
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(export(loaded.profile, report))
    locations = go_pprof(path, "-raw").split("Locations", 1)[1].split("Mappings", 1)[0]
    (line,) = [text for text in locations.splitlines() if "threadpool.cc" in text]
    assert f"0x{frame.address:x} " in line and " /src/onnxruntime/core/common/threadpool.cc:123 " in line
    assert frame.name.split("::")[-1] in line
    mapping = next(m for m in pprof_proto.Profile.FromString(gzip.decompress(path.read_bytes())).mapping
                   if m.id == frame.mapping + 1)
    assert mapping.has_filenames and mapping.has_line_numbers


def test_same_profile_same_bytes_and_no_gzip_mtime(tmp_path):
    loaded = load_perf_script(FIXTURES / "symbols-1.31.1-default.perf-script.txt")
    report = analyze(loaded)
    first = export(loaded.profile, report)
    time.sleep(1.1)
    assert export(loaded.profile, report) == first
    assert first[:2] == b"\x1f\x8b" and first[4:8] == b"\0\0\0\0"     # gzip magic, MTIME 0


def describe(data):
    """A gzipped pprof profile as stable text: header, mappings, then samples with resolved stacks."""
    message = pprof_proto.Profile.FromString(gzip.decompress(data))
    strings = message.string_table
    assert strings[0] == ""
    lines = [f"sample_type: {' '.join(f'{strings[t.type]}/{strings[t.unit]}' for t in message.sample_type)}",
             f"default_sample_type: {strings[message.default_sample_type]}",
             f"period: {message.period} {strings[message.period_type.type]}/{strings[message.period_type.unit]}",
             f"duration_nanos: {message.duration_nanos}", f"time_nanos: {message.time_nanos}",
             *(f"comment: {strings[index]}" for index in message.comment), "mappings:"]
    for m in message.mapping:
        flags = "".join(flag for flag, on in (("F", m.has_functions), ("S", m.has_filenames),
                                              ("L", m.has_line_numbers), ("I", m.has_inline_frames)) if on)
        lines.append(f"  {m.id} 0x{m.memory_start:x}-0x{m.memory_limit:x}+0x{m.file_offset:x} {strings[m.filename]} "
                     f"build_id={strings[m.build_id] or '-'} [{flags}]")
    functions = {f.id: f for f in message.function}
    locations = {loc.id: loc for loc in message.location}
    lines.append("samples:")
    for sample in message.sample:
        labels = " ".join(f"{strings[label.key]}={strings[label.str] if label.str else label.num}"
                          for label in sample.label)
        lines.append(f"  {' '.join(map(str, sample.value))} {labels}")
        for location_id in sample.location_id:
            loc = locations[location_id]
            for line in loc.line:
                function = functions[line.function_id]
                lines.append(f"    {location_id} M{loc.mapping_id} 0x{loc.address:x} {strings[function.name]} "
                             f"{strings[function.filename]}:{line.line}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", GOLDEN_FIXTURES)
def test_golden_text_of_fixture_profiles(tmp_path, name):
    # Build-ids of files on this machine would differ elsewhere: the golden leaves them out.
    _, _, path = fixture_export(tmp_path, name, replace(EXPORTER, local_build_ids=False))
    check_golden(f"pprof-{name.split('.perf-script')[0]}.txt", describe(path.read_bytes()))


@pytest.mark.slow
def test_live_demo_export_labels_sessions_build_id_and_role_totals(tmp_path, runs_dir):
    from live import record_demo, report_json, run_ortprof
    run = tmp_path / "run"
    manifest, _ = record_demo(run, duration=3)
    out = tmp_path / "cpu.pb.gz"
    run_ortprof("export", str(run), "--format", "pprof", "-o", str(out), check=True)
    report = report_json(run)
    profile, _ = build_report(RunDirectory(run))
    decoded = node_decode(out)
    assert decoded["problems"] == []

    total_ns = sum(thread.ns for thread in profile.threads.values())
    assert decoded["total"][1] == total_ns > 0
    window_ns = report["window_seconds"] * 1e9
    assert decoded["duration_nanos"] == round(window_ns)
    # time_nanos: the window's start on the wall clock, after the recording started.
    assert manifest["started_unix"] * 1e9 <= decoded["time_nanos"] <= time.time() * 1e9
    by_role = {role: ns for role, (_, ns) in decoded["by_label"]["thread_role"].items()}
    for role, ns in by_role.items():
        shown = sum(t["cpu_pct"] for t in report["threads"] if t["role"] == role and t["cpu_pct"])
        assert ns == pytest.approx(shown / 100 * window_ns, abs=0.006 / 100 * window_ns * len(report["threads"]) + 1)
    text = go_pprof(out, "-top", "-unit=ns", "-nodefraction=0", "-nodecount=1000000",
                    "-tagfocus=thread_role=intra-op-worker")
    assert int(re.search(r"Showing nodes accounting for (\d+)ns", text).group(1)) == by_role["intra-op-worker"]

    # Sessions: the demo runs one, so its callers and its pool workers carry its id.
    (session,) = report["sessions"]
    samples = go_raw_samples(go_pprof(out, "-raw"))
    for _, _, labels in samples:
        if int(labels["thread_id"]) in session["caller_tids"] or labels["thread_role"] in (
                "intra-op-worker", "inter-op-worker"):
            assert labels.get("session") == str(session["session"])
        else:
            assert "session" not in labels
    assert any(labels["thread_role"] == "caller" and "session" in labels for _, _, labels in samples)
    # The ORT module's mapping carries the recording's build-id.
    ort_mappings = [m for m in decoded["mappings"] if "onnxruntime" in Path(m["file"]).name]
    assert ort_mappings and all(m["build_id"] == report["ort"]["build_id"] for m in ort_mappings)
    assert report["ort"]["build_id"]
