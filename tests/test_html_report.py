"""The interactive HTML report, checked in a real browser (chromium-headless-shell via playwright):
from saved perf captures (fast) and from a real recording of the demo (slow)."""
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from browser import browser_page
from conftest import FIXTURES, ROOT
from live import record_demo, report_json, run_ortprof
from ortprof.analysis.loading import LoadedRun, load_perf_script
from ortprof.analysis.report import analyze
from ortprof.model.manifest import RunManifest
from ortprof.model.profile import Profile
from ortprof.model.report import CATEGORIES, OrtContext
from ortprof.render.html import COLORS, OTHERS, PRUNE_FRACTION, render_html

SPIN_FIXTURE = FIXTURES / "ort-1.15.1-debug-default.perf-script.txt.xz"
STRIPPED_FIXTURE = FIXTURES / "symbols-1.31.1-default.perf-script.txt"
SCREENSHOT = ROOT / "docs" / "img" / "html-report.png"
_DATA = re.compile(r"<script type='application/json' id=ortprof-data>(.*?)</script>", re.S)


def rgb(hex_color):
    return "rgb({}, {}, {})".format(*(int(hex_color[i:i + 2], 16) for i in (1, 3, 5)))


def embedded(page_html):
    (text,) = _DATA.findall(page_html)
    return json.loads(text)


def fixture_page(path, tmp_path, rename=None):
    """(report JSON, page path) of a saved perf capture; `rename(profile)` may edit it first."""
    loaded = load_perf_script(path)
    if rename:
        rename(loaded.profile)
    report = analyze(loaded).to_json()
    out = tmp_path / "report.html"
    out.write_text(render_html(report, loaded.profile))
    return report, out


def open_page(page, path):
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("#flame-app > *")


def drawn_frames(page):
    return page.eval_on_selector_all(".frame", "els => els.map(e => [e.dataset.name, e.dataset.category, "
                                                "getComputedStyle(e).backgroundColor, e.offsetWidth, e.offsetTop])")


def walk(node, names, depth=0):
    yield node, depth
    for child in node[5]:
        yield from walk(child, names, depth + 1)


def dominant(categories):
    return max(CATEGORIES, key=lambda c: categories.get(c) or 0)


# ---------------------------------------------------------------- checks shared by the fast and the live tests

def check_flame_data(data, report):
    flame = data["flame"]
    names = flame["names"]
    views = {view["id"]: view for view in flame["views"]}
    sampled = [t for t in report["threads"] if t["samples"]]
    assert list(views)[0] == "all"
    assert {f"tid:{t['tid']}" for t in sampled} | {f"role:{t['role']}" for t in sampled} | {"all"} == set(views)
    window_us = report["window_seconds"] * 1e6
    for thread in sampled:
        tree = views[f"tid:{thread['tid']}"]["tree"]
        assert names[tree[0]] == f"{thread['role']} {thread['tid']}"
        assert 100 * tree[2] / window_us == pytest.approx(thread["cpu_pct"], rel=0.02, abs=0.05)
        # A node's colour is its heaviest category: the thread's root carries the thread's.
        assert CATEGORIES[tree[4]] == dominant(thread["categories"])
    everything = views["all"]["tree"]
    assert CATEGORIES[everything[4]] == dominant({c: report["totals"][f"{c}_pct"] for c in CATEGORIES})
    assert sorted(names[child[0]] for child in everything[5]) == sorted({t["role"] for t in sampled})
    for view in views.values():
        root = view["tree"]
        for node, _ in walk(root, names):
            assert sum(child[2] for child in node[5]) <= node[2]
            if names[node[0]] != OTHERS:
                assert node[2] >= root[2] * PRUNE_FRACTION


def check_flame_in_browser(page, report):
    frames = drawn_frames(page)
    assert frames, "no flame graph frames drawn"
    for name, category, color, _, _ in frames:
        assert color == rgb(COLORS[category]), (name, category, color)
    spin = [f for f in frames if f[1] == "spin"]
    assert spin and all(f[2] == rgb("#c62828") for f in spin)
    # The whole-process view's first level is one frame per role.
    roles = {t["role"] for t in report["threads"] if t["samples"]}
    worker_view = page.eval_on_selector("#flame-view", "s => [...s.options].map(o => o.value)")
    assert "role:intra-op-worker" in worker_view and "role:caller" in worker_view
    assert roles <= {f[0] for f in frames}

    page.select_option("#flame-view", "role:caller")
    caller = drawn_frames(page)
    assert caller and not [f for f in caller if f[1] == "spin"], "the caller's spinning is caller-spin"
    assert {f[0] for f in caller} != {f[0] for f in frames}
    page.select_option("#flame-view", "role:intra-op-worker")
    worker = drawn_frames(page)
    assert [f for f in worker if f[1] == "spin"]
    assert "caller" not in {f[0] for f in worker}

    # Search: spin frames match "spin", the matched share is shown and is at least the spin share.
    page.fill("#flame-search", "spin")
    matches = page.eval_on_selector_all(".frame.match", "els => els.map(e => e.dataset.name)")
    assert matches and all("spin" in name.lower() for name in matches)
    shown = re.search(r"matched: ([\d.]+)% of this view", page.inner_text("#flame-match"))
    assert shown and 0 < float(shown.group(1)) <= 100
    page.fill("#flame-search", "")
    assert page.locator(".frame.match").count() == 0

    # Hover: name, % of a core, samples, DSO.
    spin_frame = page.locator(".frame[data-category=spin]:not([data-dso=''])").first
    spin_frame.hover()
    tip = page.inner_text("#tooltip")
    assert spin_frame.get_attribute("data-name") in tip and "% of a core" in tip and "samples" in tip
    assert "DSO: " + spin_frame.get_attribute("data-dso") in tip

    # Zoom: the clicked frame fills the width; reset brings the root back.
    full = page.eval_on_selector("#flame", "e => e.clientWidth")
    narrow = page.locator(".frame").evaluate_all(
        f"els => els.filter(e => e.offsetWidth > 40 && e.offsetWidth < {full} / 2).map(e => e.dataset.index)")
    assert narrow, "no frame narrower than half the graph to zoom into"
    target = page.locator(f".frame[data-index='{narrow[0]}']")
    target.click()
    assert abs(page.locator(f".frame[data-index='{narrow[0]}']").evaluate("e => e.offsetWidth") - full) <= 2
    page.click("#flame-reset")
    assert page.locator(f".frame[data-index='{narrow[0]}']").evaluate("e => e.offsetWidth") < full / 2

    # Icicle: the root moves from the bottom row to the top row.
    root_top = page.locator(".frame[data-index='0']").evaluate("e => e.offsetTop")
    page.click("#flame-mode")
    assert page.locator(".frame[data-index='0']").evaluate("e => e.offsetTop") == 0 < root_top
    page.click("#flame-mode")
    page.select_option("#flame-view", "all")


def lanes(page):
    return page.eval_on_selector_all("g.lane", "els => els.map(e => [+e.dataset.tid, e.dataset.label])")


def check_lanes(page, report):
    """A lane per thread with CPU or with scheduler states (an idle pool worker), busiest first."""
    sched = json.loads(page.text_content("#ortprof-data"))["timeline"]["sched"]
    with_states = {int(tid) for tid in sched["lanes"]} if sched else set()
    shown = [t for t in report["threads"]
             if (t["cpu_pct"] or 0) > 0 or (t["proc_cpu_pct"] or 0) > 0 or t["tid"] in with_states]
    assert [tid for tid, _ in lanes(page)] == [t["tid"] for t in shown]
    assert [label for _, label in lanes(page)] == [f"{t['role']} {t['tid']}" for t in shown]


def check_timeline_zoom(page):
    """Dragging across a quarter of the chart shows that quarter; reset shows the whole window again."""
    def bins():
        return page.eval_on_selector_all(".cpu-bin", "els => els.map(e => +e.dataset.t0)")
    before = bins()
    lane = page.locator("#timeline-svg rect").first   # the first lane's plot area
    lane.scroll_into_view_if_needed()
    box = lane.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + 5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 5, steps=4)
    page.mouse.up()
    after = bins()
    span = max(before) - min(before)
    assert 0 < len(after) < len(before)
    assert min(after) >= min(before) + 0.2 * span and max(after) <= min(before) + 0.55 * span
    page.click("#timeline-reset")
    assert bins() == before


# ---------------------------------------------------------------- fast: saved perf captures

@pytest.mark.parametrize("capture", [SPIN_FIXTURE, STRIPPED_FIXTURE], ids=["ort-1.15.1-debug", "ort-1.31.1-stripped"])
def test_embedded_data_from_a_capture(capture, tmp_path):
    report, out = fixture_page(capture, tmp_path)
    data = embedded(out.read_text())
    check_flame_data(data, report)
    timeline = data["timeline"]
    assert not timeline["has_proc"] and timeline["runs"] == []
    for lane in timeline["lanes"]:
        thread = next(t for t in report["threads"] if t["tid"] == lane["tid"])
        # Sampled CPU per bin averages to the thread's CPU over the window.
        total = sum(sum(values) for values in lane["sampled"].values()) * timeline["bin_seconds"]
        assert total / report["window_seconds"] == pytest.approx(thread["cpu_pct"], rel=0.05, abs=0.2)
        assert dominant({c: sum(v) for c, v in lane["sampled"].items()}) == dominant(thread["categories"])


@pytest.mark.live
def test_capture_in_the_browser(tmp_path):
    report, out = fixture_page(SPIN_FIXTURE, tmp_path)
    with browser_page() as (page, errors):
        open_page(page, out)
        check_flame_in_browser(page, report)
        check_lanes(page, report)
        assert page.locator(".run-span").count() == 0
        check_timeline_zoom(page)
        # No hook data: the latency section says why.
        assert report["empty_sections"]["sessions"] in page.inner_text("[data-empty=sessions]")
        assert page.locator(".latency-point").count() == 0
        button = page.locator("button.copy").first
        button.click()
        page.wait_for_function("b => b.textContent !== 'copy'", arg=button.element_handle())
        assert button.inner_text() == "copied"
        assert errors == []


@pytest.mark.live
def test_script_tags_in_frame_names_stay_data(tmp_path):
    hostile = "</script><script>window.pwned=1</script><!--"

    def rename(profile):
        profile.frames[0].name = hostile
        for frame in profile.frames:
            if frame.name.startswith("clone"):
                frame.name = hostile

    _, out = fixture_page(SPIN_FIXTURE, tmp_path, rename)
    page_html = out.read_text()
    assert hostile not in page_html
    assert hostile in embedded(page_html)["flame"]["names"]
    with browser_page() as (page, errors):
        open_page(page, out)
        assert page.evaluate("window.pwned") is None
        assert page.locator(".frame").evaluate_all(f"els => els.some(e => e.dataset.name === {json.dumps(hostile)})")
        assert errors == []


@pytest.mark.live
def test_run_without_samples(tmp_path):
    loaded = LoadedRun(RunManifest(), Profile(window=(10.0, 14.0)), OrtContext(), perf_data="missing")
    report = analyze(loaded).to_json()
    out = tmp_path / "report.html"
    out.write_text(render_html(report, loaded.profile))
    data = embedded(out.read_text())
    assert data["flame"] is None and data["timeline"]["lanes"] == []
    with browser_page() as (page, errors):
        open_page(page, out)
        assert page.locator(".frame").count() == 0
        assert report["empty_sections"]["hot_paths"] in page.inner_text("[data-empty=flame]")
        assert page.locator("[data-empty=timeline]").count() == 1
        assert errors == []


# ---------------------------------------------------------------- slow: the real demo under perf

@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("html") / "demo"
    record_demo(run_dir, duration=4)
    out = run_dir.parent / "report.html"
    run_ortprof("report", str(run_dir), "--html", str(out), check=True)
    exported = run_dir.parent / "exported.html"
    run_ortprof("export", str(run_dir), "--format", "html", "-o", str(exported), check=True)
    assert exported.read_text() == out.read_text()
    return run_dir, report_json(run_dir), out


def run_spans(page):
    return page.eval_on_selector_all(".run-span", "els => els.map(e => [+e.dataset.tid, +e.dataset.start, "
                                                  "+e.dataset.end, +e.closest('g.lane').dataset.tid])")


@pytest.mark.slow
def test_demo_report_in_the_browser(demo_run):
    run_dir, report, out = demo_run
    data = embedded(out.read_text())
    check_flame_data(data, report)
    assert out.stat().st_size < 2_000_000
    with browser_page() as (page, errors):
        open_page(page, out)
        check_flame_in_browser(page, report)
        check_lanes(page, report)

        spans = run_spans(page)
        callers = {tid for s in report["sessions"] for tid in s["caller_tids"]}
        assert len(spans) == sum(s["runs"] for s in report["sessions"]) > 0
        assert all(tid == lane_tid and tid in callers for tid, _, _, lane_tid in spans)

        # The pool worker keeps burning CPU after each request returns: sampled CPU in bins
        # that lie wholly between run() spans.
        (worker,) = [t["tid"] for t in report["threads"] if t["role"] == "intra-op-worker"]
        bins = page.eval_on_selector_all(f"g.lane[data-tid='{worker}'] .cpu-bin",
                                         "els => els.map(e => [+e.dataset.t0, +e.dataset.t1, +e.dataset.pct])")
        between = sum(pct * (t1 - t0) for t0, t1, pct in bins
                      if not any(t0 < end and start < t1 for _, start, end, _ in spans))
        total = sum(pct * (t1 - t0) for t0, t1, pct in bins)
        assert total > 0 and between / total > 0.2, (between, total)

        points = page.locator(".latency-point")
        assert points.count() == sum(s["runs"] for s in report["sessions"])
        assert page.locator(".latency-session .pline[data-p=p99_ms]").count() == 2 * len(report["sessions"])

        page.locator(".frame[data-category=spin]:not([data-dso=''])").last.hover()   # a tooltip in the picture
        # The README's picture is refreshed only on request; a test run writes to its tmp dir.
        shot = SCREENSHOT if os.environ.get("ORTPROF_UPDATE_SCREENSHOTS") else run_dir.parent / "html-report.png"
        top = page.eval_on_selector("#flame-section", "e => e.getBoundingClientRect().top + window.scrollY")
        bottom = page.eval_on_selector("#latency-section", "e => e.getBoundingClientRect().bottom + window.scrollY")
        page.screenshot(path=str(shot), full_page=True, clip={"x": 0, "y": top - 10, "width": 1400,
                                                                "height": bottom - top + 20})
        assert shot.stat().st_size < 300_000
        assert errors == []


@pytest.mark.slow
@pytest.mark.parametrize("removed", ["perf.data", "hook"])
def test_demo_report_without_samples_or_hook(demo_run, tmp_path, removed):
    run_dir, full_report, _ = demo_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    target = copy / removed
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    out = tmp_path / "report.html"
    run_ortprof("report", str(copy), "--html", str(out), check=True)
    report = report_json(copy)
    with browser_page() as (page, errors):
        open_page(page, out)
        check_lanes(page, report)
        if removed == "perf.data":
            assert page.locator(".frame").count() == 0
            assert report["empty_sections"]["hot_paths"] in page.inner_text("[data-empty=flame]")
            assert page.locator(".proc-bin").count() > 0 and page.locator(".cpu-bin").count() == 0
            assert page.locator(".run-span").count() == len(run_spans(page)) > 0
        else:
            assert page.locator(".frame").count() > 0 and page.locator(".run-span").count() == 0
            assert report["empty_sections"]["sessions"] in page.inner_text("[data-empty=sessions]")
        assert errors == []
