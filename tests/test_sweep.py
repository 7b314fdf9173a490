"""ortprof sweep on the real demo model and real ORT: the seed's result, the
quota case, settings that reach ORT, interruption, failing cells, refusals."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import OLD_ORT_PYTHON
from ortprof.demo.model import demo_model_path
from ortprof.errors import InputError
from ortprof.sweep import matrix, recommend, stats
from ortprof.sweep.driver import Sweep, SweepOptions
from ortprof.sweep.loop import ShapeError, resolve_shapes

ORTPROF = str(Path(sys.executable).with_name("ortprof"))
DEMO = str(demo_model_path("small"))
DEMO_LOOP = ["--model", DEMO, "--shape", "sequence=10"]


def needs_old_ort(test):
    """`make setup` creates the 1.15.1 venv: its absence is a failure, not a skip."""
    def check(*args, **kwargs):
        if not OLD_ORT_PYTHON.exists():
            pytest.fail(f"{OLD_ORT_PYTHON} missing: `make setup` creates it")
        return test(*args, **kwargs)
    import functools
    return functools.wraps(test)(check)
needs_cgroup = pytest.mark.skipif(os.geteuid() != 0 or not os.path.isdir("/sys/fs/cgroup"),
                                  reason="--cpus needs root and cgroupfs")


def sweep(*args, tmp, check=True):
    env = dict(os.environ, ORTPROF_RUNS_DIR=str(tmp / "runs"), COLUMNS="200")
    done = subprocess.run([ORTPROF, "sweep", "-q", *args], capture_output=True, text=True, env=env, timeout=240)
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}: {done.stderr}")
    return done


def by_label(document):
    return {cell["label"]: cell for cell in document["cells"]}


# -- the seed's table on the demo ------------------------------------------------
@pytest.fixture(scope="module")
def demo_sweep(tmp_path_factory):
    """The default matrix on the demo at 10 requests/s, one repeat, a relaxed budget."""
    tmp = tmp_path_factory.mktemp("sweep")
    done = sweep(*DEMO_LOOP, "--rate", "10", "-d", "3", "-r", "1", "--latency-budget", "3x", "--json",
                 "-o", str(tmp / "out"), tmp=tmp)
    return tmp, json.loads(done.stdout)


@pytest.mark.live
def test_defaults_burn_several_times_the_cpu_of_no_spinning_and_of_one_thread(demo_sweep):
    _, document = demo_sweep
    cells = by_label(document)
    assert set(cells) == {"threads=2 spinning=1", "threads=2 spinning=0", "threads=1"}
    defaults = cells["threads=2 spinning=1"]
    assert defaults["is_defaults"] and all(c["status"] == "ok" for c in cells.values())
    assert defaults["cpu_pct"] > 3 * cells["threads=2 spinning=0"]["cpu_pct"], cells
    assert defaults["cpu_pct"] > 3 * cells["threads=1"]["cpu_pct"], cells
    for cell in cells.values():
        assert 8 <= cell["throughput"] <= 11        # the loop kept its 10 requests/s
        assert cell["cpu_ms_per_inference"] == pytest.approx(cell["cpu_pct"] * 10 / cell["throughput"], rel=0.05)
        assert cell["p50_ms"] <= cell["p95_ms"] <= cell["p99_ms"]


@pytest.mark.live
def test_relaxed_budget_recommends_no_spinning_or_one_thread(demo_sweep):
    _, document = demo_sweep
    recommendation = document["recommendation"]
    assert recommendation["label"] in ("threads=2 spinning=0", "threads=1")
    assert recommendation["settings"] == by_label(document)[recommendation["label"]]["settings"]
    snippet = recommendation["snippet"]
    assert "ort.SessionOptions()" in snippet and "measured:" in snippet
    if recommendation["label"] == "threads=1":
        assert "options.intra_op_num_threads = 1" in snippet
    else:
        assert 'add_session_config_entry("session.intra_op.allow_spinning", "0")' in snippet
    # The cheapest configuration within budget is never dominated.
    assert by_label(document)[recommendation["label"]]["pareto"]
    exec(compile(snippet.replace('session = ort.InferenceSession("model.onnx"',
                                 f'session = ort.InferenceSession({DEMO!r}'), "snippet", "exec"), {})


@pytest.mark.live
def test_injected_settings_reach_ort(demo_sweep):
    """Checked through what ORT reports back to the hook, and the threads that exist."""
    _, document = demo_sweep
    cells = by_label(document)
    for cell in cells.values():
        effective = cell["effective"]
        assert effective["intra_op_num_threads"] == cell["settings"]["intra_op_num_threads"]
        for key, value in cell["settings"].items():
            if key.startswith("session."):
                assert effective["config"][key] == value
    assert cells["threads=2 spinning=0"]["effective"]["config"]["session.intra_op.allow_spinning"] == "0"
    # A pool of two threads has one worker thread more than no pool at all.
    two, one = cells["threads=2 spinning=0"]["threads_in_process"], cells["threads=1"]["threads_in_process"]
    assert len(two) == len(one) == 1 and two[0] == one[0] + 1


@pytest.mark.live
def test_json_has_the_documented_fields(demo_sweep):
    _, document = demo_sweep
    assert document["schema"] == "ortprof.sweep/1" and document["status"] == "completed"
    for cell in document["cells"]:
        for key in ("settings", "cpu_pct", "cpu_ms_per_inference", "p50_ms", "p95_ms", "p99_ms",
                    "throughput", "pareto"):
            assert key in cell
    assert {"settings", "snippet"} <= set(document["recommendation"])
    assert len(document["runs"]) == 3 and all(run["status"] == "ok" for run in document["runs"])


@pytest.mark.live
def test_show_reprints_csv_plot_and_a_new_budget(demo_sweep, tmp_path):
    tmp, document = demo_sweep
    directory = document["directory"]
    table = sweep("--show", directory, tmp=tmp).stdout
    assert "threads=2 spinning=1 (defaults" in table and "p95 <= 3x the defaults' p95" in table
    assert f"{document['recommendation']['label']} (recommended)" in table
    strict = sweep("--show", directory, "--latency-budget", "0.01ms", tmp=tmp).stdout
    assert "No recommendation" in strict and "within 0.01 ms" in strict
    rows = sweep("--show", directory, "--csv", tmp=tmp).stdout.splitlines()
    assert rows[0].startswith("cell,label,") and len(rows) == 1 + len(document["cells"])
    assert (Path(directory) / "sweep.csv").read_text().splitlines()[0] == rows[0]
    plot = tmp_path / "front.svg"
    sweep("--show", directory, "--plot", str(plot), tmp=tmp)
    assert "<svg" in plot.read_text()[:500]


# -- a CPU quota -------------------------------------------------------------------
@pytest.mark.slow
@needs_cgroup
def test_under_a_tenth_of_a_cpu_the_defaults_are_throttled_and_slower(tmp_path):
    # At 4 requests/s each request lands while the previous one's spinning still eats the quota.
    done = sweep(*DEMO_LOOP, "--cpus", "0.1", "--rate", "4", "--threads", "2,1", "--allow-spinning", "1",
                 "-d", "4", "-r", "1", "--warmup-runs", "2", "--json", tmp=tmp_path)
    cells = by_label(json.loads(done.stdout))
    defaults, single = cells["threads=2 spinning=1"], cells["threads=1"]
    assert defaults["condition"]["cpus"] == 0.1
    assert defaults["throttled_ms_per_s"] > 50 and single["throttled_ms_per_s"] < defaults["throttled_ms_per_s"] / 5
    assert defaults["p95_ms"] > 2 * single["p95_ms"], (defaults, single)


# -- interruption and failures ------------------------------------------------------
@pytest.mark.live
def test_ctrl_c_keeps_finished_runs_and_prints_a_partial_table(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, ORTPROF_RUNS_DIR=str(tmp_path / "runs"), COLUMNS="200")
    process = subprocess.Popen([ORTPROF, "sweep", "-q", *DEMO_LOOP, "-d", "1.5", "-r", "3", "-o", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if len(json.loads((out / "sweep.json").read_text())["runs"]) >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    time.sleep(1.0)          # the third run is under way
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    document = json.loads((out / "sweep.json").read_text())
    assert document["status"] == "interrupted"
    finished = document["runs"]
    assert 2 <= len(finished) < 9 and all(run["status"] == "ok" for run in finished)
    assert "(interrupted)" in stdout and "threads=" in stdout and "ortprof: interrupted" in stderr
    # The run in progress was stopped, not left behind.
    for hook_file in (out / "runs").glob("*/hook/hook-*.jsonl"):
        pid = int(hook_file.stem.split("-")[1])
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


FAILS_WITH_ONE_THREAD = """
import sys, time
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession({model!r}, providers=["CPUExecutionProvider"])
if session.get_session_options().intra_op_num_threads == 1:
    sys.exit("this service refuses to run with one thread")
feed = {{i.name: np.zeros((1, 10), dtype=np.int64) for i in session.get_inputs()}}
while True:
    session.run(None, feed)
    time.sleep(0.05)
"""


@pytest.mark.live
def test_a_failing_cell_is_marked_and_the_sweep_goes_on(tmp_path):
    script = tmp_path / "service.py"
    script.write_text(FAILS_WITH_ONE_THREAD.format(model=DEMO))
    done = sweep("--threads", "2,1", "--allow-spinning", "1", "-d", "1.5", "-r", "1", "--json",
                 "--", sys.executable, str(script), tmp=tmp_path)
    document = json.loads(done.stdout)
    cells = by_label(document)
    assert cells["threads=2 spinning=1"]["status"] == "ok"
    failed = cells["threads=1"]
    assert failed["status"] == "failed" and failed["cpu_pct"] is None
    assert "exited with code 1" in failed["failures"][0]["error"]
    assert "refuses to run with one thread" in failed["failures"][0]["error"]
    table = sweep("--show", document["directory"], tmp=tmp_path).stdout
    assert "FAILED" in table


@pytest.mark.live
def test_every_run_failing_exits_5(tmp_path):
    done = sweep("--threads", "1", "-d", "1", "-r", "1", "--", sys.executable, "-c", "raise SystemExit(1)",
                 tmp=tmp_path, check=False)
    assert done.returncode == 5 and "every run failed" in done.stderr


@pytest.mark.slow
def test_uncertain_cells_get_more_runs_within_the_time_budget(tmp_path):
    args = (*DEMO_LOOP, "--threads", "1", "-d", "1", "-r", "2", "--ci-target", "0.001", "--max-repeat", "3", "--json")
    more = json.loads(sweep(*args, tmp=tmp_path).stdout)
    assert [cell["repeats"] for cell in more["cells"]] == [3]
    capped = json.loads(sweep(*args, "--time-budget", "0", tmp=tmp_path).stdout)
    assert [cell["repeats"] for cell in capped["cells"]] == [2]
    assert any("--time-budget 0 s reached" in note for note in capped["notes"])


# -- refusals --------------------------------------------------------------------------
@needs_old_ort
@pytest.mark.live
def test_an_axis_the_installed_ort_does_not_know_is_refused(tmp_path):
    loop = sweep(*DEMO_LOOP, "--python", str(OLD_ORT_PYTHON), "--spin-duration-us", "0,100",
                 tmp=tmp_path, check=False)
    assert loop.returncode == 3
    assert "1.15.1" in loop.stderr and "session.intra_op.spin_duration_us" in loop.stderr
    assert "Traceback" not in loop.stderr
    workload = Path(matrix.__file__).parent.parent / "demo" / "workload.py"
    command = sweep("--spin-duration-us", "0", "--", str(OLD_ORT_PYTHON), str(workload), "--model", DEMO,
                    tmp=tmp_path, check=False)
    assert command.returncode == 3 and "session.intra_op.spin_duration_us" in command.stderr
    # What 1.15.1 does know is accepted.
    accepted = Sweep(SweepOptions(model=DEMO, python=str(OLD_ORT_PYTHON), shapes=["sequence=10"],
                                  axes={"dynamic_block_base": "0,4"}, budget=recommend.parse_budget("1.25x")))
    accepted.prepare()
    assert len(accepted.cells) == 2 * 2 + 1


@needs_old_ort
@pytest.mark.live
def test_an_unknown_axis_is_refused_after_the_first_run_when_ort_cannot_be_found_before(tmp_path):
    wrapper = tmp_path / "service.sh"
    workload = Path(matrix.__file__).parent.parent / "demo" / "workload.py"
    wrapper.write_text(f"#!/bin/sh\nexec {OLD_ORT_PYTHON} {workload} --model {DEMO} --rate 20\n")
    wrapper.chmod(0o755)
    done = sweep("--spin-duration-us", "100", "--threads", "2", "--allow-spinning", "1", "-d", "1", "-r", "1",
                 "-o", str(tmp_path / "out"), "--", str(wrapper), tmp=tmp_path, check=False)
    assert done.returncode == 3 and "1.15.1" in done.stderr, done.stderr
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["status"] == "refused"


@pytest.mark.live
def test_bad_input_is_one_line_and_exit_3(tmp_path):
    for args, message in (
            ((*DEMO_LOOP, "--threads", "0"), "--threads: 0 is below 1"),
            (("--model", DEMO, "--shape", "seq=10"), "no input or symbolic dimension"),
            (("--rate", "5", "--", sys.executable, "app.py"), "--rate applies to the built-in loop"),
            (("--model", DEMO, "--latency-budget", "soon"), "--latency-budget"),
            (("--", "no-such-command-here"), "command not found"),
            (("--show", str(tmp_path / "nothing")), "no sweep there")):
        done = sweep(*args, tmp=tmp_path, check=False)
        assert done.returncode == 3, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr


# -- the pieces, on exact inputs -------------------------------------------------------
def test_matrix_drops_settings_that_change_nothing():
    axes = matrix.build_axes({"threads": "4,2,1", "allow_spinning": "1,0", "spin_duration_us": "-1,100"}, True)
    labels = [cell.label() for cell in matrix.build_cells(axes)]
    assert labels == ["threads=4 spinning=1 spin us=-1", "threads=4 spinning=1 spin us=100",
                      "threads=4 spinning=0", "threads=2 spinning=1 spin us=-1",
                      "threads=2 spinning=1 spin us=100", "threads=2 spinning=0", "threads=1"]
    defaults = [cell.label() for cell in matrix.build_cells(axes) if matrix.is_reference(cell, axes)]
    assert defaults == ["threads=4 spinning=1 spin us=-1"]
    parallel = matrix.build_cells(matrix.build_axes({"threads": "2", "inter_op": "seq,2"}, False))
    assert parallel[1].overrides() == {"intra_op_num_threads": 2, "execution_mode": "parallel",
                                       "inter_op_num_threads": 2,
                                       "config": {"session.intra_op.allow_spinning": "1"}}


def test_budget_pareto_and_interval_arithmetic():
    assert recommend.parse_budget("1.5x").limit_ms(4.0) == 6.0
    assert recommend.parse_budget("x2").limit_ms(4.0) == 8.0
    assert recommend.parse_budget("5ms").limit_ms(40.0) == 5.0
    with pytest.raises(InputError):
        recommend.parse_budget("0x")
    points = [(40, 3.0), (5, 4.5), (4, 4.2), (4, 5.0), (50, 2.9)]
    assert stats.pareto_front(points) == [0, 2, 4]
    two = stats.estimate([1.0, 3.0])
    assert two.mean == 2.0 and two.half_width == pytest.approx(12.706)
    assert stats.estimate([7.0]).half_width is None and stats.estimate([]) is None
    noisy = [44.0, 47.0, 45.0]                         # half-width 3.7 from three runs
    needed = stats.repeats_needed(noisy, 1.0, 50)
    assert 10 <= needed <= 20
    assert stats.t975(needed - 1) * stats.estimate(noisy).half_width * 3 ** 0.5 / stats.t975(2) / needed ** 0.5 <= 1.0
    assert stats.repeats_needed(noisy, 1.0, 6) == 6 and stats.repeats_needed(noisy, 5.0, 50) == 3


@pytest.mark.live
def test_loop_synthesizes_shapes_from_the_signature():
    import onnxruntime as ort
    inputs = ort.InferenceSession(DEMO, providers=["CPUExecutionProvider"]).get_inputs()
    assert resolve_shapes(inputs, {}) == {name: [1, 1] for name in ("input_ids", "attention_mask", "token_type_ids")}
    shapes = resolve_shapes(inputs, {"sequence": [10], "input_ids": [2, 10]})
    assert shapes["input_ids"] == [2, 10] and shapes["attention_mask"] == [1, 10]
    with pytest.raises(ShapeError):
        resolve_shapes(inputs, {"input_ids": [1, 2, 3]})
