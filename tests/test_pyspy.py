"""The py-spy raw-output parser on real captures (tests/fixtures/pyspy-*.txt), and live."""
import json
import re
import subprocess
from collections import Counter

import pytest

from conftest import FIXTURES, VENV_BIN
from ortprof.analysis.pyspy import IN_RUN, PYTHON_BUSY, WAITING, PyFrame, classify, parse_frame, read_pyspy
from ortprof.errors import InputError

DEMO = FIXTURES / "pyspy-demo-1.31.1.txt"
THREADS = FIXTURES / "pyspy-threads-1.31.1.txt"


def counts_by_thread_header(path):
    """Independent count: samples per `thread (...)` root, straight from the text."""
    counts = Counter()
    for line in path.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        counts[stack.split(";", 1)[0]] += int(count)
    return counts


def test_frames_python_native_and_bare():
    frame = parse_frame("Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:395)")
    assert frame == PyFrame("Session.run", "onnxruntime/capi/onnxruntime_inference_collection.py", 395)
    assert not frame.native
    frame = parse_frame("_patch.<locals>.timed.<locals>.wrapper (sitecustomize.py:191)")
    assert frame.function == "_patch.<locals>.timed.<locals>.wrapper" and frame.line == 191
    native = parse_frame("0x7fb783a68b6d (onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so)")
    assert native.native and native.line is None and native.file.endswith(".so")
    cxx = parse_frame("std::vector<int>::push_back(int const&) (libfoo.so)")
    assert cxx.function == "std::vector<int>::push_back(int const&)" and cxx.file == "libfoo.so"
    assert parse_frame("<module>") == PyFrame("<module>")


@pytest.mark.parametrize("path", [DEMO, THREADS])
def test_sample_totals_match_an_independent_count(path):
    profile = read_pyspy(path, 100)
    expected = counts_by_thread_header(path)
    assert profile.samples == sum(expected.values())
    for thread in profile.threads:
        header = f"thread ({thread.thread_id}): {thread.name}"
        assert thread.samples == expected[header]
        assert thread.tid == int(thread.thread_id)
        assert thread.in_run_samples + thread.waiting_samples + thread.python_busy_samples == thread.samples


def test_demo_caller_thread_spends_its_active_samples_in_run():
    profile = read_pyspy(DEMO, 100)
    (main,) = profile.threads
    assert main.name == "MainThread" and main.tid == 6003
    assert profile.tids() == {6003}
    # The request loop: run() or sleeping until the next request, nearly nothing else.
    assert main.in_run_share > 0.5
    assert main.python_busy_samples <= 0.05 * main.samples
    top = main.top_stacks[0]
    assert top.kind == IN_RUN
    assert any(f.function == "Session.run" for f in top.frames)
    sleeping = [s for s in main.top_stacks if s.kind == WAITING]
    assert sleeping and sleeping[0].frames[-1].function == "clock_nanosleep"


def test_threaded_workload_tells_request_threads_from_python_work():
    profile = read_pyspy(THREADS, 100)
    by_name = {t.name: t for t in profile.threads}
    assert set(by_name) == {"MainThread", "request-1", "request-2", "preprocess"}
    for name in ("request-1", "request-2"):
        request = by_name[name]
        assert request.in_run_share > 0.4
        assert request.python_busy_share < 0.1
        # Two threads calling run() on 2 cores beside a busy Python thread: they queue for the GIL.
        assert request.gil_wait_samples > 0
    preprocess = by_name["preprocess"]
    assert preprocess.in_run_samples == 0
    assert preprocess.python_busy_share > 0.7
    assert preprocess.top_stacks[0].kind == PYTHON_BUSY
    assert "tokenize" in " ".join(f.function for f in preprocess.top_stacks[0].frames)
    joiner = by_name["MainThread"]
    assert joiner.waiting_samples == joiner.samples and joiner.gil_wait_samples == 0


def test_top_stacks_fold_raw_addresses_and_are_sorted():
    profile = read_pyspy(DEMO, 100)
    (main,) = profile.threads
    counts = [s.samples for s in main.top_stacks]
    assert counts == sorted(counts, reverse=True)
    for stack in main.top_stacks:
        functions = [f.function for f in stack.frames]
        assert not any(f.startswith("0x") for f in functions)
        assert all(a != b or a != "[unnamed]" for a, b in zip(functions, functions[1:]))
    # Each sampled ORT address is its own raw line; folded, they add up to one stack.
    raw_run_lines = [int(line.rsplit(" ", 1)[1]) for line in DEMO.read_text().splitlines() if "Session.run" in line]
    top_run = next(s for s in main.top_stacks if s.kind == IN_RUN)
    assert len(raw_run_lines) > 20 and top_run.samples > max(raw_run_lines)


def test_a_lock_wait_is_not_a_gil_wait_and_a_sleep_is_waiting():
    lock = tuple(parse_frame(f) for f in [
        "Thread.join (threading.py:1112)", "lock_PyThread_acquire_lock (libpython3.11.so.1.0)",
        "PyThread_acquire_lock_timed (libpython3.11.so.1.0)", "0x7f24f52aed90 (libc.so.6)"])
    assert classify(lock) == WAITING
    ort_setup = tuple(parse_frame(f) for f in [
        "InferenceSession.__init__ (onnxruntime/capi/onnxruntime_inference_collection.py:419)",
        "0x7f24eba193fb (onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so)"])
    assert classify(ort_setup) == PYTHON_BUSY


def test_empty_file_is_an_empty_profile(tmp_path):
    path = tmp_path / "py-spy.txt"
    path.write_text("")
    profile = read_pyspy(path, 100)
    assert profile.threads == [] and profile.samples == 0


def test_truncated_file_is_one_clear_error(tmp_path):
    text = DEMO.read_text()
    path = tmp_path / "py-spy.txt"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_pyspy(path, 100)


def test_garbage_is_one_clear_error(tmp_path):
    path = tmp_path / "py-spy.txt"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00garbage\n")
    with pytest.raises(InputError, match=r"py-spy.txt:1: not a py-spy raw line"):
        read_pyspy(path, 100)
    with pytest.raises(InputError, match="cannot read"):
        read_pyspy(tmp_path / "missing.txt", 100)


@pytest.mark.slow
def test_live_recording_of_the_threaded_workload(tmp_path):
    """`ortprof record --profiler py-spy` on the fixture's workload, parsed as recorded."""
    run = tmp_path / "run"
    workload = FIXTURES / "pyspy-threads-workload.py"
    done = subprocess.run([str(VENV_BIN / "ortprof"), "record", "--profiler", "py-spy", "-q", "--duration", "2",
                           "-o", str(run), "--", str(VENV_BIN / "python"), str(workload), "6"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rate = json.loads((run / "run.json").read_text())["options"]["pyspy_rate"]
    profile = read_pyspy(run / "py-spy.txt", rate)
    by_name = {t.name: t for t in profile.threads}
    assert by_name["preprocess"].in_run_samples == 0 and by_name["preprocess"].python_busy_samples > 0
    assert by_name["request-1"].in_run_samples > 0 and by_name["request-2"].in_run_samples > 0
    logged = int(re.search(r"Samples: (\d+)", (run / "py-spy.log").read_text()).group(1))
    assert profile.samples == logged
