"""Reading the bpftrace counters' output (signals/futex/counts.py) on a captured real run.

The fixture is futex-bpf.jsonl of `ortprof record` of the demo at 20 requests/s
with spinning off (onnxruntime 1.31.1): five 1 s snapshots, then END and the final
maps, among them @start: the calls still in flight at the close (entry time * 4,
+ 2 if it entered inside the window, + 1 for a wait).
"""
import json

import pytest

from conftest import FIXTURES
from ortprof.signals.futex.counts import read_futex_counts

CAPTURE = FIXTURES / "futex-bpf-nospin-1.31.1.jsonl"


def lines():
    return CAPTURE.read_text().splitlines()


def snapshots(name, text=None):
    """Every print of map `name` in the capture (or `text`), in order."""
    return [record["data"][name] for record in map(json.loads, filter(None, text or lines()))
            if record["type"] in ("map", "stats") and name in record["data"]]


def counted_calls(stats_map):
    return sum(value["count"] for value in stats_map.values())


def test_final_maps_give_per_thread_waits_wakes_and_times():
    counts = read_futex_counts(lines())
    in_flight = {int(tid): entered for tid, entered in snapshots("@start")[-1].items()}
    entered_inside = [tid for tid, entered in in_flight.items() if entered & 2]
    # two idle threads blocked from before the window to after it, the pool's worker
    # since a request inside it: only the worker's call counts
    assert len(in_flight) == 3 and len(entered_inside) == 1
    assert counts.complete and counts.in_flight == 1
    assert counts.window_open_ns < counts.window_close_ns
    final_calls = snapshots("@t")[-1]
    assert sum(stats.calls for stats in counts.threads.values()) == counted_calls(final_calls) + 1
    assert set(counts.threads) == {int(key.split(",")[0]) for key in final_calls}
    for stats in counts.threads.values():
        assert stats.waits + stats.wakes == stats.calls
        assert 0 <= stats.wait_seconds <= stats.seconds
    window_s = (counts.window_close_ns - counts.window_open_ns) / 1e9
    idle = set(in_flight) - set(entered_inside)
    assert idle and not idle & set(counts.threads)   # blocked all along: left out
    worker = counts.threads[entered_inside[0]]
    assert worker.waits == max(stats.waits for stats in counts.threads.values())
    # the pool's worker sleeps in futex between requests: most of the window, never more
    assert 0.5 * window_s < worker.wait_seconds <= window_s


def test_a_killed_bpftrace_keeps_its_last_complete_snapshot():
    text = lines()
    end = next(i for i, line in enumerate(text) if "ortprof-futex-end" in line)
    cut = text[:end - 2] + [text[end - 2][:25]]     # died while writing a line, before END
    counts = read_futex_counts(cut)
    assert not counts.complete
    last_complete = snapshots("@t", text[:end - 2])[-1]
    assert sum(stats.calls for stats in counts.threads.values()) == counted_calls(last_complete)
    assert counts.window_close_ns is None     # the close was never printed: nothing clipped to it


def test_no_window_no_counts():
    before_open = [line for line in lines() if "@window_open_ns" not in line]
    counts = read_futex_counts(before_open)
    assert counts.threads == {} and counts.window_open_ns is None


# thread 8 blocked from before the window to after it (idle); thread 7 since 2.5 s;
# thread 9 entered after the close
IN_FLIGHT_STARTS = {"8": (400_000_000, 1), "7": (2_500_000_000, 1), "9": (3_100_000_000, 0)}
OPEN_NS, CLOSE_NS = 1_000_000_000, 3_000_000_000
LAYOUTS = {
    # the program: calls counted at exit; @start = entry time * 4 + 2 if inside the window + 1 for a wait
    "counted at exit": (
        {"@t": {"7,1": {"count": 1, "average": 500_000_000, "total": 500_000_000}}},
        {"@before": {"10,0": 200_000_000}},      # a wake that entered before the window, exited inside
        {"@start": {tid: 4 * start + 2 * (start >= OPEN_NS) + kind for tid, (start, kind) in IN_FLIGHT_STARTS.items()}}),
    # runs recorded before: counted at entry (the call in flight too), @kind beside @start
    "counted at entry": (
        {"@calls": {"7,1": 2}}, {"@ns": {"7,1": 500_000_000, "10,0": 200_000_000}},
        {"@start": {tid: start for tid, (start, _) in IN_FLIGHT_STARTS.items()}},
        {"@kind": {tid: kind for tid, (_, kind) in IN_FLIGHT_STARTS.items()}}),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_calls_blocked_at_exit_count_their_time_up_to_the_close(layout):
    text = [json.dumps({"type": "stats" if "@t" in data else "map", "data": data}) for data in (
        {"@window_open_ns": OPEN_NS}, {"@window_close_ns": CLOSE_NS}, *LAYOUTS[layout])]
    counts = read_futex_counts(text)
    assert counts.in_flight == 1 and 8 not in counts.threads
    # one call done in the window (0.5 s), one still blocked at the close (0.5 s of it inside)
    assert abs(counts.threads[7].wait_seconds - 1.0) < 1e-9 and counts.threads[7].calls == counts.threads[7].waits == 2
    assert counts.threads[10].calls == 0 and counts.threads[10].wait_seconds == 0
    assert abs(counts.threads[10].seconds - 0.2) < 1e-9
    assert 9 not in counts.threads
