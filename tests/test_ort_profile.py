"""ORT's own profile: the parser on files captured from real runs, the clock join, pool attribution.

Fixtures: tests/fixtures/ort-profile-<version>-matmul.json were written by ORT
(enable_profiling) for a 3x MatMul [16,64]x[64,64] + Softmax model, 2 intra-op
threads, 3 run() calls, on the 1.31.1 and the 1.15.1 wheel.
"""
import json
from collections import Counter

import pytest

from conftest import FIXTURES
from live import run_ortprof
from ortprof.analysis import roles
from ortprof.analysis.operators import clock_alignment, frame_label
from ortprof.analysis.ort_profile import load_ort_profiles, parse_ort_profile
from ortprof.errors import InputError
from ortprof.model.profile import RunSpan

VERSIONS = ("1.31.1", "1.15.1")


def fixture(version):
    return FIXTURES / f"ort-profile-{version}-matmul.json"


@pytest.mark.parametrize("version", VERSIONS)
def test_nodes_and_runs_of_a_real_profile(version):
    trace = parse_ort_profile(fixture(version))
    assert not trace.truncated
    assert len(trace.model_runs) == 3
    assert len(trace.nodes) == 3 * 4                       # fence events (1.15.1) are not nodes
    assert Counter(node.node for node in trace.nodes) == {"matmul_0": 3, "matmul_1": 3, "matmul_2": 3, "softmax": 3}
    assert {node.op for node in trace.nodes} == {"MatMul", "Softmax"}
    assert {node.provider for node in trace.nodes} == {"CPUExecutionProvider"}
    caller = {tid for tid, _ts, _dur in trace.model_runs}
    assert {node.tid for node in trace.nodes} == caller     # sequential execution: the caller runs every node
    for node in trace.nodes:
        assert any(ts <= node.ts_us and node.ts_us + node.dur_us <= ts + dur for _tid, ts, dur in trace.model_runs)
        # a pool of 2 threads: MatMul opens one parallel section, Softmax on 16 rows none
        assert node.sections == (1 if node.op == "MatMul" else 0)
        assert node.workers in (0, 1)
        assert node.workers == 0 or node.sections


@pytest.mark.parametrize("version", VERSIONS)
def test_a_profile_cut_short_keeps_what_it_has(version, tmp_path):
    text = fixture(version).read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[:int(len(text) * 0.7)])
    trace = parse_ort_profile(cut)
    assert trace.truncated
    assert 0 < len(trace.nodes) < 12


@pytest.mark.parametrize("content, why", [
    ("", "no JSON trace events"),
    ('{"traceEvents": 1}', "expected a JSON array of trace events"),
    ("[1, 2, 3]", "expected a JSON array of trace events"),
    ('[{"name": "x"}]', "no trace events with ph/ts/dur"),
    ("ONNX\x00\x01", "no JSON trace events"),
])
def test_files_that_are_not_ort_profiles(content, why, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError, match=why):
        parse_ort_profile(path)


def _event(ts, num_run, blocks):
    stats = {"main_thread": {"thread_pool_name": "session-1-intra-op", "block_size": blocks, "Run": 5, "Wait": 1},
             "sub_threads": {"140": {"num_run": num_run}}}
    return {"cat": "Node", "pid": 1, "tid": 1, "dur": 10, "ts": ts, "ph": "X", "name": f"n{ts}_kernel_time",
            "args": {"op_name": "Add", "provider": "CPUExecutionProvider", "thread_scheduling_stats": stats}}


def test_workers_are_those_whose_task_count_grew(tmp_path):
    """ORT's num_run per worker counts from the profiling start: a node's workers are the growth."""
    path = tmp_path / "p.json"
    events = [_event(100, 4, [1]), _event(200, 4, [1]), _event(300, 6, [4, 4]), _event(400, 6, []),
              _event(500, 7, [])]
    path.write_text(json.dumps(events))
    nodes = parse_ort_profile(path).nodes
    assert [node.workers for node in nodes] == [1, 0, 1, 0, 0]   # no section opened: growth is not its own
    assert [node.sections for node in nodes] == [1, 1, 2, 0, 0]
    assert nodes[2].section_us == 6


def _records(path, start_unix_ns, unix_minus_mono_ns, session=1, pid=7):
    return [{"event": "session", "session": session, "pid": pid, "new_threads": [],
             "ort_profile": {"start_unix_ns": start_unix_ns, "unix_minus_mono_ns": unix_minus_mono_ns}},
            {"event": "ort_profile_end", "session": session, "pid": pid, "file": str(path)}]


def test_node_times_go_onto_perf_clock_and_the_window(tmp_path):
    trace = parse_ort_profile(fixture("1.31.1"))
    start_unix_ns, offset_ns = 1_700_000_000_000_000_000, 1_699_999_000_000_000_000
    origin = (start_unix_ns - offset_ns) / 1e9                  # 1000 s on CLOCK_MONOTONIC
    data = load_ort_profiles(_records(fixture("1.31.1"), start_unix_ns, offset_ns), FIXTURES)
    assert len(data.nodes) == 12 and len(data.model_runs) == 3
    first = min(trace.nodes, key=lambda node: node.ts_us)
    assert data.nodes[0].start == pytest.approx(origin + first.ts_us / 1e6, abs=1e-9)
    assert data.nodes[0].seconds == pytest.approx(first.dur_us / 1e6)
    # only what started inside the window: the second and third run
    second_run = sorted(ts for _tid, ts, _dur in trace.model_runs)[1]
    window = (origin + second_run / 1e6, origin + 10)
    inside = load_ort_profiles(_records(fixture("1.31.1"), start_unix_ns, offset_ns), FIXTURES, window)
    assert len(inside.nodes) == 8 and len(inside.model_runs) == 2


def test_a_profiler_on_the_monotonic_clock_needs_no_offset():
    records = _records(fixture("1.31.1"), 5_000_000_000, 1_699_999_000_000_000_000)
    records[0]["ort_profile"]["clock"] = "monotonic"
    data = load_ort_profiles(records, FIXTURES)
    first = min(parse_ort_profile(fixture("1.31.1")).nodes, key=lambda node: node.ts_us)
    assert data.nodes[0].start == pytest.approx(5.0 + first.ts_us / 1e6, abs=1e-9)


def test_a_moved_run_finds_its_profile_in_the_hook_directory(tmp_path):
    moved = tmp_path / "hook"
    moved.mkdir()
    (moved / "ort-profile-7-1.json").write_text(fixture("1.15.1").read_text())
    data = load_ort_profiles(_records("/gone/hook/ort-profile-7-1.json", 0, 0), moved)
    assert len(data.nodes) == 12 and not data.notes


def test_a_session_without_its_file_is_a_note():
    records = _records("/gone/x.json", 0, 0)[:1]
    data = load_ort_profiles(records, FIXTURES)
    assert data.nodes == [] and "session 1: no ORT profile" in data.notes[0]
    assert load_ort_profiles([{"event": "session", "session": 1, "new_threads": [5]}], FIXTURES) is None


def test_clock_alignment_bounds_the_offset_error():
    hook = [RunSpan(1, 10, 100.0, 0.010), RunSpan(1, 10, 100.1, 0.010)]
    # ORT's model_run 100 us after the hook's start and 60 us before its end; the second 80 us / 40 us
    model_runs = [(1, 10, 100.0001, 0.010 - 0.00016), (1, 10, 100.10008, 0.010 - 0.00012)]
    alignment = clock_alignment(model_runs, hook)
    assert alignment.runs_matched == 2
    assert alignment.start_lead_us_p50 == pytest.approx(90, abs=0.1)
    assert alignment.end_lag_us_p50 == pytest.approx(50, abs=0.1)
    assert alignment.error_bound_us == pytest.approx(80, abs=0.1)   # -40 <= e <= 80
    assert clock_alignment([], hook).runs_matched == 0


def _session(session, new_threads, **options):
    return {"event": "session", "session": session, "new_threads": new_threads, "options": options}


def test_pool_threads_from_session_creation_and_from_the_nodes_they_ran():
    records = [
        _session(1, [20, 21], execution_mode="ORT_SEQUENTIAL", intra_op_num_threads=3),
        _session(2, [31, 30], execution_mode="ORT_PARALLEL", intra_op_num_threads=2, inter_op_num_threads=2),
        _session(3, [40, 41, 42], execution_mode="ORT_PARALLEL", inter_op_num_threads=2),
        _session(4, [50, 51], execution_mode="ORT_PARALLEL"),
        _session(5, [], execution_mode="ORT_SEQUENTIAL"),
    ]
    pools = roles.pool_threads(records)
    assert {tid: (p.session, p.pool) for tid, p in pools.items()} == {
        20: (1, "intra-op"), 21: (1, "intra-op"),
        30: (2, "intra-op"), 31: (2, "inter-op"),            # intra-op pool is created first
        40: (3, "intra-op"), 41: (3, "intra-op"), 42: (3, "inter-op"),
        50: (4, "intra-op"), 51: (4, "inter-op")}
    assert {p.evidence for p in pools.values()} == {"session-creation"}
    # ORT's profile: the thread that ran session 4's nodes is its inter-op worker, whatever the order said
    pools = roles.pool_threads(records, {4: {50, 99}, 2: {31}})
    assert (pools[50].pool, pools[50].evidence) == ("inter-op", "ort-profile")
    assert pools[31].evidence == "ort-profile" and 99 not in pools


def test_frame_labels_name_the_op_types_a_function_ran_under():
    assert frame_label(Counter({"MatMul": 81, "Gemm": 17, "Add": 2})) == "MatMul 81%, Gemm 17%"
    assert frame_label(Counter({"Softmax": 5})) == "Softmax 100%"


@pytest.mark.live
def test_lint_with_a_file_that_is_not_a_profile_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    model = tmp_path / "model.onnx"
    model.write_bytes((FIXTURES / "ort-profile-1.31.1-matmul.json").read_bytes())
    result = run_ortprof("lint", str(model), "--ort-profile", str(bad))
    assert result.returncode != 0
    assert "not an ORT profile" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
