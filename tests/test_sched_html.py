"""The HTML report's thread-state lanes and per-run breakdowns, from scheduler timelines constructed
around a real run's run() spans (fixtures/run-nospin): the data checked against the timeline's own
clipping (SchedTimeline.states_between), its size bound, and the page in a real browser."""
import json
import re
from collections import defaultdict

import pytest

from browser import browser_page
from sched_timelines import CALLER, HOG, WORKER, loaded_nospin, nospin_timeline
from ortprof.analysis.report import analyze
from ortprof.render import html_sched
from ortprof.render.html import page_data, render_html
from ortprof.signals.sched.timeline import BLOCKED, ON_CPU, RUNNABLE, STATES

_DATA = re.compile(r"<script type='application/json' id=ortprof-data>(.*?)</script>", re.S)


@pytest.fixture(scope="module")
def nospin():
    loaded = loaded_nospin()
    report = analyze(loaded).to_json()
    timeline, slowest = nospin_timeline(loaded)
    return loaded, report, timeline, slowest


def _state_ns(intervals, start, end):
    totals = defaultdict(int)
    for interval in intervals:
        a, b = max(interval.start_ns, start), min(interval.end_ns, end)
        if b > a:
            totals[interval.state] += b - a
    return totals


def test_lanes_add_up_to_the_timeline(nospin):
    loaded, report, timeline, _ = nospin
    sched = page_data(report, loaded.profile, timeline)["timeline"]["sched"]
    assert set(sched["lanes"]) == {str(CALLER), str(WORKER)}      # the caller and the session's pool worker
    origin = int(round(loaded.profile.span()[0] * 1e9))
    bin_ns = sched["bin_seconds"] * 1e9
    for tid, entries in sched["lanes"].items():
        drawn = defaultdict(float)
        for entry in entries:
            shares = [100 if s == entry[2] else 0 for s in range(len(STATES))] if len(entry) == 3 else entry[2:]
            assert len(shares) == len(STATES) and abs(sum(shares) - 100) <= 3   # each share rounded
            for state, pct in zip(STATES, shares):
                drawn[state] += pct / 100 * bin_ns * entry[1]
        covered = sum(entry[1] for entry in entries) * bin_ns
        truth = _state_ns(timeline.threads[int(tid)], origin, origin + int(covered))
        for state in STATES:
            assert drawn[state] == pytest.approx(truth[state], rel=0.02, abs=0.002 * covered), (tid, state)
        assert len(entries) <= html_sched.STATE_BINS


def test_each_run_is_broken_down_as_the_timeline_clips_it(nospin):
    loaded, report, timeline, slowest = nospin
    data = page_data(report, loaded.profile, timeline)["timeline"]
    runs, breakdowns = loaded.profile.runs, data["sched"]["runs"]
    assert len(breakdowns) == len(runs) == len(data["runs"])
    for run, breakdown in zip(runs, breakdowns):
        start = int(round(run.start * 1e9))
        end = start + int(round(run.seconds * 1e9))
        truth = _state_ns(timeline.states_between(CALLER, start, end), start, end)
        assert breakdown["states"] == [pytest.approx(truth[s] / 1e6, abs=2e-3) for s in STATES]
        assert sum(breakdown["states"]) == pytest.approx(run.seconds * 1000, abs=0.01)
        # The worker sleeps between sections and is woken for each: 40 wake-ups, each 5% of a section.
        (worker,) = breakdown["workers"]
        wakeups = [i for i in timeline.states_between(WORKER, start, end) if i.state == RUNNABLE and i.woken_by]
        assert worker[0] == WORKER and worker[1] == len(wakeups) == 40
        assert worker[2] == pytest.approx(sum(i.ns for i in wakeups) / len(wakeups) / 1e6, abs=2e-3)
        assert breakdown["sections"] == "visible" and breakdown["section_count"] == 40
        assert breakdown["preempted_ms"] == breakdown["throttled_ms"] == 0
        # The caller computes 60% and waits 40% of each section (the hog's share aside).
        hog = 0.4 * run.seconds * 1000 if run is slowest else 0.0
        states = dict(zip(STATES, breakdown["states"]))
        assert states[ON_CPU] == pytest.approx(0.6 * (run.seconds * 1000 - hog), rel=0.01)
        assert states[BLOCKED] == pytest.approx(0.4 * (run.seconds * 1000 - hog), rel=0.01)
        assert states[RUNNABLE] == pytest.approx(hog, abs=1e-3)
        assert breakdown["held"] == ([[HOG.comm, HOG.pid, HOG.tid, pytest.approx(hog, abs=2e-3)]] if hog else [])
    p95 = report["sessions"][0]["p95_ms"]
    assert [r[4] for r in data["runs"]] == [int(run.seconds * 1000 >= p95) for run in runs]
    assert data["runs"][runs.index(slowest)][4] == 1


def test_strips_go_to_the_slowest_runs_within_the_budget(nospin, monkeypatch):
    loaded, report, timeline, slowest = nospin
    breakdowns = page_data(report, loaded.profile, timeline)["timeline"]["sched"]["runs"]
    stripped = [run.seconds for run, b in zip(loaded.profile.runs, breakdowns) if "strip" in b]
    assert stripped and max(stripped) == slowest.seconds
    size = sum(len(json.dumps(b["strip"], separators=(",", ":"))) for b in breakdowns if "strip" in b)
    assert size <= html_sched.RUN_STRIP_BUDGET
    monkeypatch.setattr(html_sched, "RUN_STRIP_BUDGET", size // 4)
    fewer = page_data(report, loaded.profile, timeline)["timeline"]["sched"]["runs"]
    kept = [run.seconds for run, b in zip(loaded.profile.runs, fewer) if "strip" in b]
    assert 0 < len(kept) < len(stripped)
    assert min(kept) >= max(run.seconds for run, b in zip(loaded.profile.runs, fewer) if "strip" not in b)


def test_page_size_is_bounded_however_busy_the_threads(nospin):
    """Thousands of state changes a second (threads busy between runs in 50 us slices) cost the page
    no more than a quiet timeline's bound: lanes at bin resolution, strips within their budget."""
    loaded, report, timeline, _ = nospin
    plain = len(render_html(report, loaded.profile))
    quiet = len(render_html(report, loaded.profile, timeline))
    busy_timeline, _ = nospin_timeline(loaded, slice_us=50)
    seconds = loaded.profile.span()[1] - loaded.profile.span()[0]
    changes = sum(len(v) for v in busy_timeline.threads.values()) / seconds
    busy = len(render_html(report, loaded.profile, busy_timeline))
    bound = (2 * html_sched.STATE_BINS * len("[1499,1,20,30,0,50,0],") + html_sched.RUN_STRIP_BUDGET
             + len(loaded.profile.runs) * 200)
    print(f"HTML: {plain} bytes without states, {quiet} with a quiet timeline, {busy} with "
          f"{changes:.0f} state changes/s (bound {plain + bound})")
    assert changes > 10_000
    assert plain < quiet <= busy <= plain + bound


def test_no_timeline_says_why(nospin):
    loaded, report, _, _ = nospin
    data = page_data(report, loaded.profile)["timeline"]
    assert data["sched"] is None and data["sched_missing"]
    report = dict(report, empty_sections=dict(report["empty_sections"], latency_breakdown="no sched_switch events"))
    assert page_data(report, loaded.profile)["timeline"]["sched_missing"] == "no sched_switch events"


# ---------------------------------------------------------------- in the browser

def _rgb(hex_color):
    return "rgb({}, {}, {})".format(*(int(hex_color[i:i + 2], 16) for i in (1, 3, 5)))


@pytest.mark.live
def test_lanes_and_a_slow_run_in_the_browser(nospin, tmp_path):
    loaded, report, timeline, slowest = nospin
    out = tmp_path / "report.html"
    out.write_text(render_html(report, loaded.profile, timeline))
    slowest_index = loaded.profile.runs.index(slowest)
    with browser_page() as (page, errors):
        page.goto(out.resolve().as_uri())
        page.wait_for_selector("#timeline-svg")
        for tid in (CALLER, WORKER):
            drawn = page.eval_on_selector_all(f".state-lane[data-tid='{tid}'] .state-bin",
                                              "els => els.map(e => [e.dataset.state, e.getAttribute('fill')])")
            assert len(drawn) > 50
            assert all(color == html_sched.STATE_COLORS[state] for state, color in drawn)
        legend = page.eval_on_selector_all("#state-legend [data-state] .chip",
                                           "els => els.map(e => getComputedStyle(e).backgroundColor)")
        assert legend == [_rgb(html_sched.STATE_COLORS[s]) for s in STATES]
        slow = page.locator(".run-span.slow")
        assert slow.count() == sum(r[4] for r in page_data(report, loaded.profile, timeline)["timeline"]["runs"])

        # A click on the slowest run: its breakdown, the hog that held the caller's CPU, the worker's wake-ups.
        span = page.locator(f".run-span[data-run='{slowest_index}']")
        span.scroll_into_view_if_needed()
        box = span.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        panel = page.locator("#run-breakdown")
        assert panel.is_visible() and panel.get_attribute("data-run") == str(slowest_index)
        assert "SLOW" in panel.locator("h3").inner_text()
        assert page.locator(".run-span.selected").evaluate_all("els => els.map(e => +e.dataset.run)") == [slowest_index]
        runnable = float(page.locator("#run-breakdown tr[data-state=runnable] td").nth(1).inner_text())
        assert runnable == pytest.approx(0.4 * slowest.seconds * 1000, abs=0.01)
        assert HOG.comm in page.locator("#run-breakdown table.run-held").inner_text()
        assert page.locator(f"#run-breakdown .run-workers tr[data-tid='{WORKER}'] td").nth(1).inner_text() == "40"
        assert page.locator("#run-breakdown .run-sections").get_attribute("data-sections") == "visible"
        assert page.locator("#run-breakdown .run-strip .strip-bin").count() > 20
        page.screenshot(path=str(tmp_path / "lanes.png"), full_page=True)

        # A click on a latency point shows that run's breakdown too.
        point = page.locator(f".latency-point[data-run='{slowest_index - 1 if slowest_index else 1}']")
        point.click()
        assert panel.get_attribute("data-run") == point.get_attribute("data-run")
        assert errors == []


@pytest.mark.live
def test_without_a_timeline_the_lanes_are_absent_and_a_line_says_why(nospin, tmp_path):
    loaded, report, _, _ = nospin
    out = tmp_path / "report.html"
    out.write_text(render_html(report, loaded.profile))
    with browser_page() as (page, errors):
        page.goto(out.resolve().as_uri())
        page.wait_for_selector("#timeline-svg")
        assert page.locator(".state-bin").count() == 0
        why = page_data(report, loaded.profile)["timeline"]["sched_missing"]
        assert why in page.inner_text("[data-empty=sched]")
        span = page.locator(".run-span").first
        box = span.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        assert why in page.inner_text("#run-breakdown")
        assert errors == []


def test_the_sessions_breakdown_is_tabled(nospin):
    loaded, report, timeline, _ = nospin
    typical = {"runs": 16, "run_ms": 4.7, "states_ms": {"on_cpu": 2.9, "runnable": 0.0, "throttled": 0.0,
                                                         "blocked": 1.8, "other": 0.0}, "held_by": []}
    slow = {"runs": 5, "run_ms": 14.2, "states_ms": {"on_cpu": 3.0, "runnable": 9.5, "throttled": 0.0,
                                                      "blocked": 1.7, "other": 0.0},
            "held_by": [{"pid": 4242, "tid": 4242, "comm": "hog", "ms": 9.1}]}
    session = dict(report["sessions"][0], latency_breakdown={"typical": typical, "slow": slow})
    page = render_html(dict(report, sessions=[session]), loaded.profile, timeline)
    rows = re.findall(r"<tr data-group=(\w+)>(.*?)</tr>", page)
    assert [name for name, _ in rows] == ["typical", "slow"]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", rows[1][1])
    assert cells[:8] == ["slow", "5", "14.20", "3.00", "9.50", "0.00", "1.70", "0.00"]
    assert "hog (4242/4242) 9.10 ms" in cells[8]
    assert "<table class=latency-breakdown" not in render_html(report, loaded.profile, timeline)
