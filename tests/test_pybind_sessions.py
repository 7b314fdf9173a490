"""The pybind signal's fast parts: dispatcher spans of a real recording -> the startup hook's
records (checked against the service's own timing of the same runs), and what `record --pid`
decides to do (probe or not, and why)."""
import json
import os
import statistics
from pathlib import Path

import pytest

from ortprof.analysis.latency import session_latencies
from ortprof.signals.capi.maps import Mapping, read_maps, reachable_path
from ortprof.signals.pybind.capture import NO_ATTACH, probing_decision, timed_entry
from ortprof.signals.pybind.sessions import hook_records, known_from_hook_records, untimed_counts
from ortprof.signals.pybind.timing import RETURNED, RunSpan, dispatch_events, pair_runs

# `ortprof record --pid PID --no-attach -d 2` of tests/workloads/pybind_service.py --rate 20
# --raise-every 7 (ORT 1.31.1): the probes' events (perf script), the service's ready.json and
# its own timing of each run() (latency.txt) and of each run() that raised (raised.txt), in
# CLOCK_MONOTONIC seconds, as the service measured them around session.run().
FIXTURE = Path(__file__).parent / "fixtures" / "pybind-record-1.31.1"
OWNER_TAG = "18234"          # the ortprof that recorded it (its pid names the events)


def _service_runs(name):
    return [tuple(map(float, line.split())) for line in (FIXTURE / name).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def recorded():
    lines = (FIXTURE / "pybind.perf-script.txt").read_text().splitlines()
    spans = pair_runs(dispatch_events(lines, OWNER_TAG), "flags9")
    ready = json.loads((FIXTURE / "ready.json").read_text())
    return spans, ready


def _within(spans, runs):
    """The service's runs that began while the probes recorded."""
    first = min(s.start_ns for s in spans if s.start_ns) / 1e9
    last = max(s.end_ns or s.start_ns or 0 for s in spans) / 1e9
    return [(start, duration) for start, duration in runs if first - 0.001 <= start <= last]


def test_each_run_the_service_made_is_one_run_record_of_its_session(recorded):
    spans, ready = recorded
    records = hook_records(spans, ready["pid"], "1.31.1", "/site/onnxruntime_pybind11_state.so")
    (session,) = [r for r in records if r["event"] == "session"]
    assert session["handle"] == hex(ready["session"]) and session["source"] == "pybind"
    assert session["options_known"] is False and session["model"] is None and session["options"] == {}
    assert "options" in session["unknown"] and "model" in session["unknown"]
    (runs,) = [r for r in records if r["event"] == "runs"]
    own = _within(spans, _service_runs("latency.txt"))
    assert len(runs["runs"]) == len(own) > 30
    for (number, start, duration, tid, kind), (own_start, own_duration) in zip(runs["runs"], own):
        assert (number, tid, kind) == (1, ready["pid"], "run")
        # the span is nested in the service's own timing of the same call
        assert own_start <= start and start + duration <= own_start + own_duration + 1e-6
    latency, = session_latencies(records)
    own_p50 = statistics.median(1000 * duration for _, duration in own)
    assert latency.options_known is False and latency.handle == hex(ready["session"])
    # the span leaves out Python's wrapper and pybind11's generic dispatch: ~0.1 ms of a cold 0.8 ms run
    assert statistics.median(latency.durations_ms) == pytest.approx(own_p50, rel=0.2)


def test_runs_that_raised_are_counted_not_timed(recorded):
    spans, _ = recorded
    raised = _within(spans, _service_runs("raised.txt"))
    counts = untimed_counts(spans)
    # the last raised call of the recording is closed by the next entry, if any came
    assert len(raised) - 1 <= counts.get("raised", 0) <= len(raised) and len(raised) > 5
    assert set(counts) <= {"raised", "running", "before"}


def _span(session, start_ms, method="run", outcome=RETURNED):
    return RunSpan(method, 0, 7, 70, start_ms * 1_000_000, start_ms * 1_000_000 + 500_000, outcome, session)


def test_session_numbers_are_kept_across_windows_and_run_async_is_not_timed():
    numbers = {}
    first = hook_records([_span(0x10, 1), _span(0x20, 2)], 7, numbers=numbers)
    second = hook_records([_span(0x30, 3), _span(0x20, 4), _span(0x20, 5, "run_async")], 7, numbers=numbers)
    assert [(r["session"], r["handle"]) for r in first if r["event"] == "session"] == [(1, "0x10"), (2, "0x20")]
    assert [(r["session"], r["handle"]) for r in second if r["event"] == "session"] == [(2, "0x20"), (3, "0x30")]
    (runs,) = [r for r in second if r["event"] == "runs"]
    assert [run[0] for run in runs["runs"]] == [3, 2]
    assert untimed_counts([_span(0x20, 5, "run_async")]) == {"run_async": 1}


def test_what_the_hook_knows_of_a_session_by_its_handle_fills_it_in():
    hook = [{"event": "session", "session": 4, "handle": "0x20", "model": "/m/a.onnx", "options_known": True,
             "options": {"intra_op_num_threads": 2, "config": {}}, "secret": "not copied"}]
    records = hook_records([_span(0x10, 1), _span(0x20, 2)], 7, known=known_from_hook_records(hook))
    known, unknown = sorted((r for r in records if r["event"] == "session"), key=lambda r: r["handle"], reverse=True)
    assert known["model"] == "/m/a.onnx" and known["options_known"] and known["options"]["intra_op_num_threads"] == 2
    assert "secret" not in known and "model" not in known["unknown"] and "options" not in known["unknown"]
    assert unknown["model"] is None and unknown["options_known"] is False


@pytest.mark.parametrize("no_attach, status, root, perf, expected", [
    (False, "attached", True, "perf", (None, None)),               # the hook times run(): one source
    (False, "hooked", True, "perf", (None, None)),
    (True, "not attached (--no-attach)", True, "perf", (NO_ATTACH, None)),
    (False, "gdb is not installed", True, "perf", ("the startup hook's recording could not be attached", None)),
    (False, "gdb is not installed", False, "perf", ("the startup hook's recording could not be attached", "root")),
    (True, None, True, None, (NO_ATTACH, "perf")),
])
def test_probes_only_where_the_hook_does_not_time_run(no_attach, status, root, perf, expected):
    instead, refused = probing_decision(no_attach, status, root, perf)
    assert instead == expected[0]
    assert (refused is None) == (expected[1] is None)
    if expected[1]:
        assert expected[1] in refused and "ortprof doctor --check uprobes" in refused


def test_warm_up_counts_the_entries_of_timed_methods_only():
    assert timed_entry("py_run__77") and timed_entry("py_run_with_iobinding__77") and timed_entry("py_run_o1__77")
    assert not timed_entry("py_run__77_x0") and not timed_entry("py_run_async__77") and not timed_entry("Run__77")


def test_a_mapped_file_is_reached_as_the_same_file_or_not_at_all():
    mapping = next(m for m in read_maps(os.getpid()) if m.path.startswith("/") and "x" in m.perms)
    assert reachable_path(os.getpid(), mapping) == mapping.path
    other_inode = Mapping(mapping.start, mapping.end, mapping.perms, 0, mapping.device, mapping.inode + 1,
                          mapping.path)
    assert reachable_path(os.getpid(), other_inode) is None
