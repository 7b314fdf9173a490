"""The analysis pipeline on perf script captured from symbolized ORT 1.15.1 builds.

Each fixture's *.workload.txt holds the process CPU the workload measured itself
(getrusage over its whole run), so the report's numbers can be checked against it.
"""
import re

import pytest

from conftest import FIXTURES
from ortprof.analysis.report import report_from_perf_script


def workload_cpu(name):
    text = (FIXTURES / name).read_text()
    return float(re.search(r"cpu=\s*([0-9.]+)%", text).group(1))


def thread_by_role(report, role):
    return [t for t in report["threads"] if t["role"] == role]


@pytest.mark.parametrize("build,script", [
    ("debug", "ort-1.15.1-debug-default.perf-script.txt.xz"),
    ("relwithdebinfo", "ort-1.15.1-relwithdebinfo-default.perf-script-no-inline.txt.xz"),
])
def test_default_options_spin_is_found_and_dominates_the_worker(build, script):
    report = report_from_perf_script(FIXTURES / script)
    (worker,) = thread_by_role(report, "intra-op-worker")
    (caller,) = thread_by_role(report, "caller")
    categories = worker["categories"]
    assert max(categories, key=categories.get) == "spin"
    assert categories["spin"] > 0.8 * worker["cpu_pct"]
    assert "spin-wait" in [f["id"] for f in report["findings"]]
    # The spin CPU agrees with the CPU difference the workload measured between
    # default and allow_spinning=0 runs, within +-25%.
    measured = workload_cpu(f"ort-1.15.1-{build}-default.workload.txt") - workload_cpu(f"ort-1.15.1-{build}-nospin.workload.txt")
    assert report["totals"]["spin_pct"] == pytest.approx(measured, rel=0.25)
    assert caller["categories"]["spin"] == 0


@pytest.mark.parametrize("script", ["ort-1.15.1-debug-nospin.perf-script.txt.xz",
                                    "ort-1.15.1-relwithdebinfo-nospin.perf-script-no-inline.txt.xz"])
def test_spinning_off_has_no_spin_and_blocks_through_nsync(script):
    report = report_from_perf_script(FIXTURES / script)
    assert report["totals"]["spin_pct"] == 0
    assert "spin-wait" not in [f["id"] for f in report["findings"]]
    stacks = " ".join(item["stack"] for item in report["futex"]["top_stacks"])
    assert "nsync_mu_semaphore_p_with_deadline" in stacks or "nsync_cv_wait" in stacks
    assert "OrtCondVar::notify_one" in stacks or "nsync_mu_semaphore_v" in stacks


def test_futex_waits_are_the_worker_and_wakes_the_caller():
    report = report_from_perf_script(FIXTURES / "ort-1.15.1-debug-nospin.perf-script.txt.xz")
    rows = {row["role"]: row for row in report["futex"]["threads"]}
    assert rows["intra-op-worker"]["waits"] > 0 and rows["intra-op-worker"]["wakes"] == 0
    assert rows["caller"]["wakes"] > 0
    # Blocking dominates the wait time: the worker sleeps inside futex most of the window.
    assert rows["intra-op-worker"]["time_ms_per_s"] > 100


def test_categories_add_up_to_thread_cpu():
    report = report_from_perf_script(FIXTURES / "ort-1.15.1-debug-default.perf-script.txt.xz")
    for thread in report["threads"]:
        assert sum(thread["categories"].values()) == pytest.approx(thread["cpu_pct"], abs=0.05)
    totals = report["totals"]
    parts = sum(totals[k] for k in totals if k.endswith("_pct") and k not in ("cpu_pct", "proc_cpu_pct", "mismatch_pct"))
    assert parts == pytest.approx(totals["cpu_pct"], abs=0.1)
    # Measured by the workload itself over its whole run: 73.6%.
    assert totals["cpu_pct"] == pytest.approx(workload_cpu("ort-1.15.1-debug-default.workload.txt"), rel=0.15)


def _diagnosed_as(document, **ort):
    """The findings of a report JSON document whose ORT facts are `ort` (OrtContext fields)."""
    from ortprof.analysis.diagnose import diagnose
    from ortprof.model.report import OrtContext, Report
    report = Report.from_json(document)
    report.ort = OrtContext(**ort)
    return diagnose(report)


def test_debug_build_finding_when_the_run_used_a_debug_build():
    report = report_from_perf_script(FIXTURES / "ort-1.15.1-debug-default.perf-script.txt.xz")
    ids = [f.id for f in _diagnosed_as(report, build_config="Debug", ort_version="1.15.1")]
    assert "debug-build" in ids and "spin-wait" in ids
    assert "debug-build" not in [f.id for f in _diagnosed_as(report, build_config="RelWithDebInfo")]


def test_spin_remedy_offers_spin_duration_only_where_ort_has_it():
    report = report_from_perf_script(FIXTURES / "ort-1.15.1-relwithdebinfo-default.perf-script-no-inline.txt.xz")
    old = next(f for f in _diagnosed_as(report, ort_version="1.15.1") if f.id == "spin-wait")
    new = next(f for f in _diagnosed_as(report, ort_version="1.31.1") if f.id == "spin-wait")
    assert "spin_duration_us" not in old.remedy and "spin_duration_us" in new.remedy
    assert "allow_spinning" in old.remedy and "intra_op_num_threads = 1" in old.remedy
