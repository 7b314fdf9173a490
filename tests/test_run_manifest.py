"""run.json: one typed reader and writer (RunManifest), its shipped JSON Schema, older runs still read."""
import json

import pytest

from conftest import FIXTURES
from ortprof.errors import InputError
from ortprof.model.manifest import ProfilerRun, RunManifest, Window
from ortprof.recording.rundir import RunDirectory
from ortprof.schemas.generate import stale_schemas
from ortprof.signals import manifest_section_types
from ortprof.signals.cgroup import CgroupRecord
from ortprof.signals.base import Usability
from ortprof.signals.futex import BPF_METHOD, FutexPlan
from ortprof.signals.threads import ThreadsSummary
from schema_check import assert_valid_run

# run.json of a real `ortprof record` of the demo, written by the revision before the typed
# manifest (a dict built by hand): runs recorded then must still be read.
EARLIER_RUN = FIXTURES / "run-manifest-demo-before-typed.json"


def test_shipped_schemas_are_generated_from_the_dataclasses():
    assert stale_schemas() == [], "run python scripts/gen_report_schema.py"


def test_a_run_recorded_before_the_typed_manifest_is_read_with_its_sections():
    document = json.loads(EARLIER_RUN.read_text())
    manifest = RunManifest.from_json(document, manifest_section_types())
    assert manifest.status == "completed" and manifest.mode == "launch"
    assert manifest.window_span == (document["window"]["start_mono"], document["window"]["end_mono"])
    assert manifest.window_seconds == document["window"]["seconds"]
    assert manifest.profilers["perf"].command[0].endswith("perf")
    plan = manifest.section("futex", FutexPlan)
    assert plan.method == BPF_METHOD and plan.bpf.usable is True
    assert manifest.section("futex_probe", Usability).usable is True
    threads = manifest.section("threads", ThreadsSummary)
    assert threads.process_cpu_pct == document["threads"]["process_cpu_pct"]
    assert manifest.section("cgroup", CgroupRecord).stat_before == document["cgroup"]["stat_before"]
    # Written back, nothing it had is lost or changed (a section gains the fields added since, at their defaults).
    rewritten = manifest.to_json()
    for key, value in document.items():
        if isinstance(value, dict) and key in manifest.sections:
            assert {k: v for k, v in rewritten[key].items() if k in value} == value, key
        else:
            assert rewritten[key] == value, key
    assert_valid_run(rewritten)


def test_written_and_read_back_is_the_same_manifest(tmp_path):
    run = RunDirectory.create("roundtrip", tmp_path / "run")
    manifest = RunManifest(name="roundtrip", mode="attach", pid=42, profiled_pid=42, status="completed",
                           window=Window(1.0, 3.5, 2.5),
                           profilers={"perf": ProfilerRun(["perf", "record"], "perf.data", 0, 10, [])})
    manifest.set_section("futex_probe", Usability(False, "tracefs is not mounted", "mount -t tracefs ..."))
    manifest.set_section("cgroup", CgroupRecord(limit={"cpus": 0.5}, stat_before={"nr_throttled": 1}))
    run.write_manifest(manifest)
    document = json.loads((run.path / "run.json").read_text())
    assert_valid_run(document)
    again = run.read_manifest()
    assert again.to_json() == manifest.to_json()
    assert again.section("futex_probe", Usability).reason == "tracefs is not mounted"
    assert again.window_span == (1.0, 3.5)


def test_keys_a_newer_ortprof_writes_are_kept(tmp_path):
    run = RunDirectory.create("newer", tmp_path / "run")
    (run.path / "run.json").write_text(json.dumps({"schema": "ortprof.run/1", "status": "completed",
                                                   "gpu": {"method": "cupti"}, "hostname": "h1"}))
    manifest = run.read_manifest()
    assert manifest.hostname == "h1"
    assert manifest.to_json()["gpu"] == {"method": "cupti"}


@pytest.mark.parametrize("document, message", [
    ({"schema": "ortprof.run/1", "window": "soon"}, "malformed manifest"),
    ({"schema": "ortprof.run/1", "profilers": {"perf": [1, 2]}}, "malformed manifest"),
    ({"schema": "ortprof.build/1"}, "not an ortprof run manifest"),
])
def test_a_malformed_manifest_is_one_input_error(tmp_path, document, message):
    (tmp_path / "run.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match=message):
        RunDirectory(tmp_path).read_manifest()


def test_the_schema_rejects_drift():
    document = RunManifest.from_json(json.loads(EARLIER_RUN.read_text()), manifest_section_types()).to_json()
    for mutate in (lambda d: d["window"].update(seconds="3 s"), lambda d: d["futex"].update(extra=1),
                   lambda d: d.update(schema="ortprof.run/2"), lambda d: d["profilers"]["perf"].pop("command")):
        broken = json.loads(json.dumps(document))
        mutate(broken)
        with pytest.raises(AssertionError):
            assert_valid_run(broken)
