"""The sched signal's reader on real captures: `ortprof record --sched --cpus 0.5 --duration 0.5`
of the demo (20 requests/s, default options: the pool spins, the quota throttles it), kept in
tests/fixtures/sched-quota-0.5-1.31.1{,-libbpf}.* (the output of each program that records the
scheduler, bpftrace's and the compiled one's, and run.json's sched and cgroup sections with the
kernel's own figures: each thread's /proc schedstat and cpu.stat). bpftrace's own cost made the
demo leave its CPU 16 times as often in its capture as in the compiled program's."""
import json
import lzma
import os
from pathlib import Path

import pytest

from ortprof.signals.sched.capture import SchedRecord, threads_running
from ortprof.signals.sched.events import build_timeline, read_events
from ortprof.signals.sched.timeline import ON_CPU, RUNNABLE, STATES, THROTTLED

FIXTURES = Path(__file__).parent / "fixtures"
CAPTURES = {"bpftrace": "sched-quota-0.5-1.31.1", "libbpf": "sched-quota-0.5-1.31.1-libbpf"}


@pytest.fixture(scope="module", params=list(CAPTURES))
def capture_name(request):
    return CAPTURES[request.param]


@pytest.fixture(scope="module")
def quota_run(capture_name):
    return json.loads((FIXTURES / f"{capture_name}.run.json").read_text())


@pytest.fixture(scope="module")
def quota_events(capture_name):
    with lzma.open(FIXTURES / f"{capture_name}.jsonl.xz", "rt") as stream:
        return read_events(stream)


@pytest.fixture(scope="module")
def quota_timeline(quota_run, quota_events):
    record = SchedRecord(**{k: v for k, v in quota_run["sched"].items()})
    return build_timeline(quota_events, quota_run["profiled_pid"], quota_events.window,
                          threads_running(record, quota_events.window), source=record.method)


def test_the_capture_is_read_whole(quota_run, quota_events):
    assert quota_events.complete and quota_events.lost_events == 0
    assert quota_events.counts() == {**quota_run["sched"]["events"]}
    opened, closed = quota_events.window
    assert 0.45e9 < closed - opened < 0.6e9
    # the quota's period timer fires every 100 ms (cpu.cfs_period_us's default)
    gaps = [b - a for a, b in zip(quota_events.period_timer_ns, quota_events.period_timer_ns[1:])]
    assert gaps and all(abs(gap - 100e6) < 1e6 for gap in gaps)


def test_each_thread_is_in_one_state_at_every_instant_of_the_window(quota_timeline):
    opened, closed = quota_timeline.window
    assert len(quota_timeline.threads) == 4     # the demo's caller, its pool worker, two idle Python threads
    for tid, intervals in quota_timeline.threads.items():
        assert intervals[0].start_ns == opened and intervals[-1].end_ns == closed, tid
        for before, after in zip(intervals, intervals[1:]):
            assert before.end_ns == after.start_ns, (tid, before, after)
        assert all(interval.state in STATES and interval.ns > 0 for interval in intervals)


def test_time_on_cpu_and_waiting_match_the_kernels_schedstat(quota_run, quota_timeline):
    """/proc/PID/task/TID/schedstat at the window's open and close: ns on CPU and ns on a run
    queue (with the task-based throttling of Linux 6.18, a throttled task's wait is in it too).
    Tolerance 15%: the recording itself moves ~5 us per context switch between the two."""
    record = quota_run["sched"]
    checked = 0
    for tid, intervals in quota_timeline.threads.items():
        before, after = record["schedstat_open"][str(tid)], record["schedstat_close"][str(tid)]
        on_cpu_ns, waited_ns = after[0] - before[0], after[1] - before[1]
        if on_cpu_ns < 20e6:
            continue
        ours_on = sum(i.ns for i in intervals if i.state == ON_CPU)
        ours_waited = sum(i.ns for i in intervals if i.state in (RUNNABLE, THROTTLED))
        assert ours_on == pytest.approx(on_cpu_ns, rel=0.15), tid
        assert ours_waited == pytest.approx(waited_ns, rel=0.15), tid
        checked += 1
    assert checked == 2


def test_throttled_periods_add_up_to_cpu_stat(quota_run, quota_timeline):
    """cpu.stat's throttled time adds up each CPU's throttled stretch when it ends: a stretch
    across the window's open or close counts differently, at most about half a 100 ms period
    per CPU and edge here."""
    cgroup = quota_run["cgroup"]
    cpu_stat_s = (cgroup["stat_after"]["throttled_usec"] - cgroup["stat_before"]["throttled_usec"]) / 1e6
    ours_s = sum(p.end_ns - p.start_ns for p in quota_timeline.throttled) / 1e9
    cpus = {p.cpu for p in quota_timeline.throttled}
    assert cpu_stat_s > 0.05 and cpus <= {0, 1}
    assert abs(ours_s - cpu_stat_s) <= 0.05 * len(cpus), (ours_s, cpu_stat_s)
    # the threads' throttled time covers the periods (two threads throttled on one CPU count twice)
    throttled_thread_s = sum(i.ns for intervals in quota_timeline.threads.values() for i in intervals
                             if i.state == THROTTLED) / 1e9
    assert 0.75 * ours_s <= throttled_thread_s <= 2 * ours_s + 0.1


def test_holders_are_other_threads_within_the_wait(quota_run, quota_timeline):
    held = 0
    for intervals in quota_timeline.threads.values():
        for interval in intervals:
            if interval.holders:
                assert interval.state in (RUNNABLE, THROTTLED)
                assert sum(h.ns for h in interval.holders) <= interval.ns * (1 + len({h.tid for h in interval.holders}))
                assert all(h.pid != quota_run["profiled_pid"] and h.tid > 0 and h.comm for h in interval.holders)
                held += 1
    assert held > 0


def test_woken_runnable_intervals_name_the_waker(quota_timeline):
    woken = [i for intervals in quota_timeline.threads.values() for i in intervals if i.woken_by]
    assert woken and all(i.state == RUNNABLE for i in woken)


def test_a_line_cut_short_and_junk_are_skipped():
    lines = ['{"type": "printf", "data": "S 12 100 3 150 11 0 160 0 python\\n"}',
             '{"type": "printf", "data": "S 12 200 3 2',
             'Attaching 12 probes...',
             '{"type": "map", "data": {"@window_open_ns": 50}}',
             '{"type": "map", "data": {"@window_close_ns": 300}}',
             '{"type": "lost_events", "data": {"events": 7}}']
    events = read_events(lines)
    assert len(events.episodes) == 1 and events.window == (50, 300) and events.lost_events == 7
    assert not events.complete      # no exit print of the open episodes
    timeline = build_timeline(events, 10, events.window)
    states = [(i.state, i.start_ns, i.end_ns, i.woken_by) for i in timeline.threads[12]]
    assert states == [("on_cpu", 50, 100, None), ("other", 100, 150, None), ("runnable", 150, 160, 11),
                      ("on_cpu", 160, 300, None)]
    assert any("dropped 7" in note for note in timeline.notes)


# ---- which program records the scheduler (signals/sched/capture.py: plan) ----

def plan_for(sched):
    from types import SimpleNamespace
    from ortprof.signals.sched.capture import plan
    return plan(SimpleNamespace(options=SimpleNamespace(sched=sched)))


@pytest.fixture
def built_loader(monkeypatch, tmp_path):
    from ortprof.signals.sched.compiled import LOADER_ENV
    loader = tmp_path / "ortprof-bpf"
    loader.write_text("#!/bin/sh\n")
    loader.chmod(0o755)
    monkeypatch.setenv(LOADER_ENV, str(loader))
    monkeypatch.setenv("ORTPROF_BPFTRACE", "")     # bpftrace (the fallback) is not asked: no process started
    return loader


@pytest.fixture
def nothing_built(monkeypatch):
    from ortprof.signals.sched.compiled import LOADER_ENV
    monkeypatch.setenv(LOADER_ENV, "")
    monkeypatch.setenv("ORTPROF_BPFTRACE", "")     # and no bpftrace either


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the programs load as root only")


@needs_root
@pytest.mark.parametrize("sched", [None, True])
def test_the_compiled_program_records_by_default_and_on_request(built_loader, sched):
    record, _ = plan_for(sched)
    assert record.method == "libbpf" and record.reason is None and record.requested is sched


@needs_root
def test_no_sched_turns_it_off_even_when_built(built_loader):
    record, bpftrace_usable = plan_for(False)
    assert record.method is None and "--no-sched" in record.reason and not bpftrace_usable


@needs_root
@pytest.mark.parametrize("sched", [None, True])
def test_without_either_program_it_says_why_and_how_to_build(nothing_built, sched):
    from ortprof.signals.sched.compiled import BUILD_FIX
    record, bpftrace_usable = plan_for(sched)
    assert record.method is None and not bpftrace_usable
    assert "ORTPROF_BPF_LOADER is empty" in record.reason and "bpftrace is not installed" in record.reason
    assert record.fix == BUILD_FIX


def test_a_loader_that_is_not_there_is_named(monkeypatch, tmp_path):
    from ortprof.signals.sched.compiled import LOADER_ENV, loader_path
    monkeypatch.setenv(LOADER_ENV, str(tmp_path / "nothing"))
    assert loader_path() == (None, f"the compiled BPF program is not built ({tmp_path / 'nothing'} missing)")
