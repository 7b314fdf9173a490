"""`ortprof diff` of the sessions' latency breakdowns (typical and slow runs from the scheduler's
view): two reports of a real run (fixtures/run-nospin) given the breakdowns of a CPU hog on the
caller's core (BEFORE) and of the hog gone (AFTER), compared in JSON, the terminal and the HTML page."""
import copy
import io
import json

import pytest
from rich.console import Console

from sched_timelines import loaded_nospin
from test_diff import assert_valid_diff
from ortprof.analysis.report import analyze
from ortprof.diff.compare import compare
from ortprof.diff.inputs import side_of
from ortprof.diff.terminal import render_diff
from ortprof.render.diff_html import render_diff_html
from ortprof.signals.sched.section import HeldBy, LatencyBreakdown, RunGroup


def _group(runs, run_ms, on_cpu, runnable, blocked, held):
    return RunGroup(runs=runs, run_ms=run_ms, states_ms={"on_cpu": on_cpu, "runnable": runnable, "throttled": 0.0,
                                                          "blocked": blocked, "other": 0.0}, held_by=held)


@pytest.fixture(scope="module")
def sides():
    loaded = loaded_nospin()
    report = analyze(loaded)
    hogged, idle = copy.deepcopy(report), copy.deepcopy(report)
    hogged.sessions[0].latency_breakdown = LatencyBreakdown(
        typical=_group(16, 4.8, 2.9, 0.3, 1.6, [HeldBy(4242, 4242, "hog", 0.3)]),
        slow=_group(5, 14.2, 3.0, 9.5, 1.7, [HeldBy(4242, 4242, "hog", 9.1), HeldBy(77, 77, "kworker/0:1", 0.4)]))
    idle.sessions[0].latency_breakdown = LatencyBreakdown(
        typical=_group(16, 4.7, 2.9, 0.0, 1.8, []),
        slow=_group(5, 6.9, 3.4, 0.2, 3.3, [HeldBy(77, 77, "kworker/0:1", 0.2)]))
    return side_of("BEFORE", "hogged", None, hogged), side_of("AFTER", "idle", None, idle)


def test_breakdowns_compared_group_by_group(sides):
    before, after = sides
    diff = assert_valid_diff(compare(before, after))
    (row,) = diff["latency_breakdown"]
    assert row["session"] == before.report.sessions[0].session
    b, a = before.report.sessions[0].latency_breakdown, after.report.sessions[0].latency_breakdown
    for group in ("typical", "slow"):
        figures, old, new = row["groups"][group], getattr(b, group), getattr(a, group)
        assert (figures["run_ms"]["before"], figures["run_ms"]["after"]) == (old.run_ms, new.run_ms)
        assert set(figures["states_ms"]) == {s for s in old.states_ms if old.states_ms[s] or new.states_ms[s]} | {"on_cpu"}
        for state, q in figures["states_ms"].items():
            assert q["delta"] == pytest.approx(new.states_ms[state] - old.states_ms[state], abs=1e-4)
    slow = row["groups"]["slow"]
    # The hog is the top holder before and gone after; holders pair by comm (pids differ between runs).
    assert [h["comm"] for h in slow["held_by"]] == ["hog", "kworker/0:1"]
    assert (slow["held_by"][0]["before"], slow["held_by"][0]["after"]) == (9.1, 0.0)
    assert slow["states_ms"]["runnable"]["verdict"] == "no interval"        # far above the floor
    assert row["groups"]["typical"]["run_ms"]["verdict"] == "within noise"   # 0.1 ms: at the floor
    assert "throttled" not in slow["states_ms"]
    assert any("judged by the noise floor alone" in note for note in diff["notes"])


def test_terminal_and_html_show_the_breakdowns(sides, tmp_path):
    diff = compare(*sides)
    console = Console(file=io.StringIO(), width=160, force_terminal=False)
    render_diff(diff, console)
    text = console.file.getvalue()
    assert "latency breakdown, session" in text
    runnable = next(line for line in text.splitlines() if "slow   caller runnable ms" in line)
    assert "9.50" in runnable and "0.20" in runnable and "-9.30" in runnable
    assert "held by hog" in text
    page = render_diff_html(diff, *sides)
    assert page.count("class=latency-breakdown") == 1 and "held by hog" in page


def test_a_side_without_a_breakdown_says_why(sides):
    before, after = sides
    plain = copy.deepcopy(after)
    plain.report.sessions[0].latency_breakdown = None
    plain.report.empty_sections["latency_breakdown"] = "no scheduler events: recorded with --no-sched"
    diff = assert_valid_diff(compare(before, plain))
    assert diff["latency_breakdown"] == []
    assert diff["not_compared"]["latency_breakdown"] == "AFTER: no scheduler events: recorded with --no-sched"


def test_report_json_sides_keep_their_breakdowns(sides, tmp_path):
    from ortprof.diff.inputs import load_side
    paths = []
    for side in sides:
        path = tmp_path / f"{side.label}.json"
        path.write_text(json.dumps(side.report.to_json()))
        paths.append(load_side(str(path), side.label))
    assert compare(*paths)["latency_breakdown"] == compare(*sides)["latency_breakdown"]
