"""`ortprof record` and `ortprof report` on real recordings of the demo.

Recordings are made once per session (each a few seconds) and shared by the
record checks and the report checks below.
"""

import pytest

from live import by_role, record_demo, report_json
from ortprof.hook import read_hook_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    # Same workload, one knob changed: the spin accuracy check compares these two.
    runs["default"] = record_demo(root / "default", duration=6)
    runs["nospin"] = record_demo(root / "nospin", "--allow-spinning", "0", duration=6)
    runs["one-thread"] = record_demo(root / "one-thread", "--intra-op-num-threads", "1", duration=4)
    runs["quota"] = record_demo(root / "quota", duration=5, rate=2, record_args=("--cpus", "0.1"))
    return {name: (root / name, manifest) for name, (manifest, _) in runs.items()}


# ---- record -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["default", "nospin"])
def test_manifest_fields(recordings, name):
    run_dir, manifest = recordings[name]
    assert manifest["schema"] == "ortprof.run/1"
    assert manifest["status"] == "completed"
    assert manifest["warmup"]["mode"] == "hook"
    assert 5 <= manifest["window"]["seconds"] <= 8
    environment = manifest["environment"]
    assert environment["ort"]["symbol_status"] == "stripped"
    assert len(environment["ort"]["build_id"]) == 40
    assert environment["cpu"]["logical_cores"] >= 1
    assert manifest["profilers"]["perf"]["bytes"] > 100_000
    assert manifest["threads"]["process_cpu_pct"] > 0
    assert (run_dir / "threads.csv").stat().st_size > 0


@pytest.mark.parametrize("name", ["default", "nospin"])
def test_samples_from_pool_workers_and_futex_with_stacks(recordings, name):
    run_dir, _ = recordings[name]
    report = report_json(run_dir)
    workers = by_role(report, "intra-op-worker")
    assert len(workers) == 1 and workers[0]["samples"] > 0
    futex = report["futex"]
    assert futex["recorded"] and futex["method"] in ("bpftrace", "perf-tracepoints")
    if name == "nospin":   # a spinning pool hardly ever sleeps: with default options there may be no futex call
        assert futex["calls"] > 0
        assert futex["top_stacks"] and ";" in futex["top_stacks"][0]["stack"]


@pytest.mark.parametrize("name", ["default", "nospin"])
def test_hook_records_one_latency_per_run(recordings, name):
    run_dir, manifest = recordings[name]
    records = list(read_hook_records(run_dir / "hook"))
    sessions = [r for r in records if r["event"] == "session"]
    runs = [run for r in records if r["event"] == "runs" for run in r["runs"]]
    assert len(sessions) == 1
    config = sessions[0]["options"]["config"]
    assert config.get("session.intra_op.allow_spinning", "1") == ("0" if name == "nospin" else "1")
    # The demo prints how many requests completed; the hook saw each once, plus
    # possibly the run() that the stop signal interrupted (the demo drops that one).
    demo_line = (run_dir / "workload.log").read_text().strip().splitlines()[-1]
    requests = int(demo_line.split("requests=")[1].split()[0])
    assert requests <= len(runs) <= requests + 1
    assert all(0 < duration < 1 for _, _, duration, _, _ in runs)


def test_cpus_limit_moves_the_throttling_counter(recordings):
    _, manifest = recordings["quota"]
    cgroup = manifest["cgroup"]
    assert cgroup["stat_after"]["nr_throttled"] > cgroup["stat_before"]["nr_throttled"]
    assert manifest["cgroup_created"]["cpus"] == 0.1


# ---- report -------------------------------------------------------------------

def test_defaults_spin_is_found_and_is_the_workers_largest_category(recordings):
    report = report_json(recordings["default"][0])
    assert "spin-wait" in [f["id"] for f in report["findings"]]
    (worker,) = by_role(report, "intra-op-worker")
    assert max(worker["categories"], key=worker["categories"].get) == "spin"
    finding = next(f for f in report["findings"] if f["id"] == "spin-wait")
    assert "allow_spinning" in finding["remedy"] and finding["tradeoff"]


def test_spinning_off_no_spin_finding_and_many_more_futex_calls(recordings):
    default = report_json(recordings["default"][0])
    nospin = report_json(recordings["nospin"][0])
    assert "spin-wait" not in [f["id"] for f in nospin["findings"]]
    assert nospin["futex"]["calls_per_inference"] > 5 * default["futex"]["calls_per_inference"]


def test_one_thread_has_no_workers_and_no_spin(recordings):
    report = report_json(recordings["one-thread"][0])
    assert not by_role(report, "intra-op-worker")
    assert "spin-wait" not in [f["id"] for f in report["findings"]]


def test_quota_gives_cpu_throttling_and_oversubscription_findings(recordings):
    report = report_json(recordings["quota"][0])
    ids = [f["id"] for f in report["findings"]]
    assert "cpu-throttling" in ids
    # ORT's default pool (one thread per core) ignores the 0.1-CPU quota.
    assert "thread-oversubscription" in ids
    assert report["cgroup"]["quota_cpus"] == 0.1 and report["cgroup"]["throttled_periods"] > 0


def test_spin_estimate_matches_the_measured_cost_of_spinning(recordings):
    """The spin CPU the report estimates for the defaults agrees within 25% with the
    CPU difference between the default and allow_spinning=0 runs (from /proc)."""
    default = report_json(recordings["default"][0])
    nospin = report_json(recordings["nospin"][0])
    measured = default["totals"]["proc_cpu_pct"] - nospin["totals"]["proc_cpu_pct"]
    assert measured > 10
    assert default["totals"]["spin_pct"] == pytest.approx(measured, rel=0.25)


def test_categories_add_up_to_proc_cpu(recordings):
    report = report_json(recordings["default"][0])
    totals = report["totals"]
    assert not totals["mismatch"], totals
    assert totals["cpu_pct"] == pytest.approx(totals["proc_cpu_pct"], rel=0.10)


def test_fail_on_gates(recordings):
    from live import run_ortprof
    run_dir = str(recordings["default"][0])
    assert run_ortprof("report", run_dir, "--fail-on", "spin_pct>5").returncode == 1
    assert run_ortprof("report", run_dir, "--fail-on", "finding:cpu-throttling").returncode == 0
    assert run_ortprof("report", str(recordings["quota"][0]), "--fail-on", "finding:cpu-throttling").returncode == 1
    bad = run_ortprof("report", run_dir, "--fail-on", "spin_pct>>5")
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1


def test_folded_output(recordings, tmp_path):
    from live import run_ortprof
    out = tmp_path / "stacks.folded"
    run_ortprof("report", str(recordings["default"][0]), "--folded", str(out), check=True)
    lines = out.read_text().splitlines()
    assert lines and all(line.rsplit(" ", 1)[1].isdigit() for line in lines)
    assert any(line.startswith("intra-op-worker-") for line in lines)


def test_html_report(recordings, tmp_path):
    from live import run_ortprof
    out = tmp_path / "report.html"
    run_ortprof("report", str(recordings["default"][0]), "--html", str(out), check=True)
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "spin-wait" in page and "intra-op-worker" in page


def test_old_ort_with_inlined_pause_spin_is_found(tmp_path):
    """ORT 1.15.1's stripped wheel inlines PAUSE into each spin loop (no SpinPause function)."""
    from conftest import OLD_ORT_PYTHON, ROOT
    from live import run_ortprof
    from ortprof.demo.model import demo_model_path
    if not OLD_ORT_PYTHON.exists():
        pytest.fail(f"{OLD_ORT_PYTHON} missing: `make setup` creates the onnxruntime 1.15.1 venv")
    out = tmp_path / "old"
    run_ortprof("record", "-q", "--duration", "5", "-o", str(out), "--", str(OLD_ORT_PYTHON),
                str(ROOT / "ortprof" / "demo" / "workload.py"), "--model", str(demo_model_path("small")),
                "--rate", "10", check=True)
    report = report_json(out)
    assert report["ort"]["ort_version"] == "1.15.1"
    (worker,) = by_role(report, "intra-op-worker")
    assert worker["categories"]["spin"] > 0.7 * worker["cpu_pct"]
    assert "spin-wait" in [f["id"] for f in report["findings"]]
    assert report["totals"]["sync_pct"] < 5


def test_report_json_contract(recordings):
    """The field names users' scripts rely on."""
    report = report_json(recordings["default"][0])
    assert report["schema"] == "ortprof.report/1" and report["run"]
    for thread in report["threads"]:
        assert {"tid", "role", "cpu_pct", "categories"} <= set(thread)
    assert {"cpu_pct", "compute_pct", "spin_pct", "caller_spin_pct", "sync_pct", "kernel_pct", "python_pct",
            "other_pct"} <= set(report["totals"])
    assert {"calls", "calls_per_s", "time_ms_per_s", "calls_per_inference"} <= set(report["futex"])
    for session in report["sessions"]:
        assert {"model", "options", "runs", "p50_ms", "p95_ms", "p99_ms"} <= set(session)
    assert isinstance(report["hot_paths"], list) and report["hot_paths"]
    assert {"role", "category", "cpu_pct", "stack"} <= set(report["hot_paths"][0])
    for finding in report["findings"]:
        assert {"id", "severity", "title", "evidence", "remedy"} <= set(finding)
