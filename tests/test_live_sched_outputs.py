"""The sched signal's outputs on real recordings: the HTML report's state lanes and run breakdown,
and `ortprof diff` of an idle run against one with CPU hogs on the caller's core. The workload and
the hogs are the scheduler-cause tests' (test_live_sched_causes): a one-thread session pinned to
CPU 0 that logs each request's run-queue wait as the kernel counts it (schedstat), an independent
measure of the time the caller was runnable."""
import json
import sys

import pytest

from browser import browser_page
from live import report_json, run_ortprof
from test_diff import assert_valid_diff
from test_live_sched_causes import HOG, HOG_COMM, WORKLOAD, WorkloadLog, _needs_sched, _record, hog_python

pytestmark = [pytest.mark.live, pytest.mark.slow]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """{name: (run directory, workload log)}: idle, and three hogs on CPU 0 from 1.5 s for 1.5 s."""
    root = tmp_path_factory.mktemp("sched-outputs")
    runs, hog = {}, hog_python(root)
    for name, hogs in (("idle", "0"), ("hog", "3")):
        log = root / f"{name}.log"
        manifest = _record(root / name, sys.executable, "-c", WORKLOAD, "0", "20", "30", hogs, "1.5", "1.5",
                           str(log), hog, HOG, duration=4.0)
        _needs_sched(manifest)
        runs[name] = (root / name, WorkloadLog(log))
    return runs


def test_diff_names_the_hog(recorded, tmp_path):
    (idle, _), (hogged, _) = recorded["idle"], recorded["hog"]
    result = run_ortprof("diff", str(idle), str(hogged), "--json", "--html", str(tmp_path / "diff.html"))
    assert result.returncode == 0, result.stderr
    diff = assert_valid_diff(json.loads(result.stdout))
    (row,) = diff["latency_breakdown"]
    slow = row["groups"]["slow"]
    runnable = slow["states_ms"]["runnable"]
    assert runnable["delta"] > 5 and runnable["verdict"] == "no interval", runnable   # the hogs' 3 x CPU 0
    assert slow["run_ms"]["delta"] == pytest.approx(slow["run_ms"]["after"] - slow["run_ms"]["before"], abs=1e-3)
    # The hogs held a good part of that wait (the rest: the recorder's own bpftrace, busy with the hogs'
    # events on the same CPU, and the hogs before they took their name, as python: measured 56, 49 and
    # 16 of 145 ms per slow run).
    hog = next(h for h in slow["held_by"] if h["comm"] == HOG_COMM)
    assert hog["before"] == 0 and hog["after"] > 0.25 * runnable["after"]
    assert row["cause"]["after"] == "cpu-contention"
    terminal = run_ortprof("diff", str(idle), str(hogged)).stdout
    assert f"held by {HOG_COMM}" in terminal and "latency breakdown, session" in terminal
    assert f"held by {HOG_COMM}" in (tmp_path / "diff.html").read_text()
    print(f"live diff: slow runs {slow['run_ms']['before']} -> {slow['run_ms']['after']} ms, caller runnable "
          f"{runnable['before']} -> {runnable['after']} ms, held by the hogs {hog['after']} ms per slow run")


def test_html_lanes_and_the_slowest_run(recorded, tmp_path):
    run_dir, workload = recorded["hog"]
    out = tmp_path / "report.html"
    run_ortprof("report", str(run_dir), "--html", str(out), check=True)
    report = report_json(run_dir)
    page_text = out.read_text()
    data = json.loads(page_text.split("id=ortprof-data>", 1)[1].split("</script>", 1)[0])
    timeline = data["timeline"]
    sched = timeline["sched"]
    assert sched is not None and str(workload.caller) in sched["lanes"]
    # The caller's running share in its state lane against its CPU from /proc (threads.csv).
    entries = sched["lanes"][str(workload.caller)]
    running = sum((100 if len(e) == 3 and e[2] == 0 else (e[2] if len(e) > 3 else 0)) * e[1] for e in entries)
    share = running / 100 * sched["bin_seconds"] / report["window_seconds"] * 100
    proc = next(t["proc_cpu_pct"] for t in report["threads"] if t["tid"] == workload.caller)
    assert share == pytest.approx(proc, abs=3), (share, proc)
    slowest = max(range(len(timeline["runs"])), key=lambda i: timeline["runs"][i][3])
    window_start = json.loads((run_dir / "run.json").read_text())["window"]["start_mono"]
    request = workload.request_at(window_start + timeline["runs"][slowest][2], tolerance=0.005)
    assert request is not None
    with browser_page() as (page, errors):
        page.goto(out.resolve().as_uri())
        page.wait_for_selector("#timeline-svg")
        assert page.locator(f".state-lane[data-tid='{workload.caller}'] .state-bin").count() > 50
        span = page.locator(f".run-span[data-run='{slowest}']")
        span.scroll_into_view_if_needed()
        box = span.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        assert page.locator("#run-breakdown").get_attribute("data-run") == str(slowest)
        runnable = float(page.locator("#run-breakdown tr[data-state=runnable] td").nth(1).inner_text())
        throttled = float(page.locator("#run-breakdown tr[data-state=throttled] td").nth(1).inner_text())
        # the time the caller waited for a CPU in this run, as the kernel counted it
        assert runnable + throttled == pytest.approx(request["run_delay_ns"] / 1e6, rel=0.15, abs=0.3)
        assert HOG_COMM in page.locator("#run-breakdown table.run-held").inner_text()
        assert page.locator("#run-breakdown .run-sections").get_attribute("data-sections") == "no-pool"
        page.screenshot(path=str(tmp_path / "lanes.png"), full_page=True)
        assert errors == []
    print(f"live html: {out.stat().st_size} bytes; caller running {share:.1f}% vs /proc {proc:.1f}%; slowest run "
          f"waited {runnable + throttled:.2f} ms, schedstat {request['run_delay_ns'] / 1e6:.2f} ms")
