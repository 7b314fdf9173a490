"""Reading the bpftrace counters' output (analysis.futex_counts) on a captured real run.

The fixture is futex-bpf.jsonl of `ortprof record` of the demo at 20 requests/s
with spinning off (onnxruntime 1.31.1): five 1 s snapshots, then END and the final maps,
among them @start: the calls still in flight (entry time * 2 + 1 for a wait).
"""
import json

import pytest

from conftest import FIXTURES
from ortprof.analysis.futex_counts import read_futex_counts

CAPTURE = FIXTURES / "futex-bpf-nospin-1.31.1.jsonl"


def lines():
    return CAPTURE.read_text().splitlines()


def snapshots(name):
    """Every print of map `name` in the capture, in order."""
    return [record["data"][name] for record in map(json.loads, filter(None, lines()))
            if record["type"] == "map" and name in record["data"]]


def test_final_maps_give_per_thread_waits_wakes_and_times():
    counts = read_futex_counts(lines())
    # two idle threads blocked since before the window and still blocked at its close
    assert counts.complete and counts.in_flight == len(snapshots("@start")[-1]) == 2
    assert counts.window_open_ns < counts.window_close_ns
    final_calls = snapshots("@calls")[-1]
    assert sum(stats.calls for stats in counts.threads.values()) == sum(final_calls.values())
    in_flight = {int(tid) for tid in snapshots("@start")[-1]}
    assert set(counts.threads) == {int(key.split(",")[0]) for key in final_calls} | in_flight
    for stats in counts.threads.values():
        assert stats.waits + stats.wakes == stats.calls
        assert 0 <= stats.wait_seconds <= stats.seconds
    window_s = (counts.window_close_ns - counts.window_open_ns) / 1e9
    for tid in in_flight:    # blocked for the whole window, without a call entering in it
        assert counts.threads[tid].calls == 0 and abs(counts.threads[tid].wait_seconds - window_s) < 1e-6
    worker = max(counts.threads.values(), key=lambda stats: stats.waits)
    # the pool's worker sleeps in futex between requests: most of the window, never more
    assert 0.5 * window_s < worker.wait_seconds <= window_s


def test_a_killed_bpftrace_keeps_its_last_complete_snapshot():
    text = lines()
    end = next(i for i, line in enumerate(text) if "ortprof-futex-end" in line)
    cut = text[:end - 2] + [text[end - 2][:25]]     # died while writing a line, before END
    counts = read_futex_counts(cut)
    assert not counts.complete
    last_complete = [record["data"]["@calls"] for record in map(json.loads, filter(None, text[:end - 2]))
                     if record["type"] == "map" and "@calls" in record["data"]][-1]
    assert sum(stats.calls for stats in counts.threads.values()) == sum(last_complete.values())
    assert counts.window_close_ns is None     # the close was never printed: nothing clipped to it


def test_no_window_no_counts():
    before_open = [line for line in lines() if "@window_open_ns" not in line]
    counts = read_futex_counts(before_open)
    assert counts.threads == {} and counts.window_open_ns is None


# thread 8 blocked since before the window; thread 7 since 2.5 s; thread 9 after the close
IN_FLIGHT_STARTS = {"8": (400_000_000, 1), "7": (2_500_000_000, 1), "9": (3_100_000_000, 0)}
IN_FLIGHT_MAPS = {
    # the program's @start value: entry time * 2 + 1 for a wait
    "packed": ({"@start": {tid: 2 * start + kind for tid, (start, kind) in IN_FLIGHT_STARTS.items()}},),
    # runs recorded before that kept the kind in @kind
    "separate @kind": ({"@start": {tid: start for tid, (start, _) in IN_FLIGHT_STARTS.items()}},
                       {"@kind": {tid: kind for tid, (_, kind) in IN_FLIGHT_STARTS.items()}}),
}


@pytest.mark.parametrize("layout", list(IN_FLIGHT_MAPS))
def test_calls_blocked_at_exit_count_their_time_up_to_the_close(layout):
    open_ns, close_ns = 1_000_000_000, 3_000_000_000
    text = [json.dumps({"type": "map", "data": data}) for data in (
        {"@calls": {"7,1": 1}}, {"@ns": {"7,1": 500_000_000}},
        {"@window_open_ns": open_ns}, {"@window_close_ns": close_ns}, *IN_FLIGHT_MAPS[layout])]
    counts = read_futex_counts(text)
    assert counts.in_flight == 2
    assert counts.threads[8].calls == 0 and abs(counts.threads[8].wait_seconds - 2.0) < 1e-9
    assert abs(counts.threads[7].wait_seconds - 1.0) < 1e-9 and counts.threads[7].calls == 1
    assert 9 not in counts.threads
