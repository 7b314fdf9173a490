"""The build log keeps up: read while a slow stand-in build runs, it already holds every step
finished so far, and a failing step's output while ninja still waits for its other jobs."""
import os
import subprocess
import sys
import time

import pytest

import test_build as stand_in
from test_build import build_args, latest_log

# the stand-in ORT tree and its venvs, as test_build.py makes them
ort_tree, build_venv, install_venv = stand_in.ort_tree, stand_in.build_venv, stand_in.install_venv

pytestmark = [pytest.mark.slow, pytest.mark.live]

HELD_AT = 20                # the stand-in stops after this step until released
WITHIN_SECONDS = 2.0        # the log is line-buffered; this leaves room for a busy machine


def start(args, cwd, env, output):
    with open(output, "w") as stream:
        return subprocess.Popen([sys.executable, "-m", "ortprof", *map(str, args)], cwd=cwd,
                                env=dict(os.environ, **env), stdout=stream, stderr=subprocess.STDOUT)


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s: {what}")


def held_build(ort_tree, tmp_path, build_venv, extra_args=(), **knobs):
    """Start a build that holds after step HELD_AT; returns (process, release file, its log) once held."""
    release = tmp_path / "release"
    env = {"FAKE_ORT_STEP_SECONDS": "0.05", "FAKE_ORT_HOLD_AT": str(HELD_AT), "FAKE_ORT_RELEASE": str(release),
           **knobs}
    process = start(build_args(ort_tree, build_venv, *extra_args), tmp_path, env, tmp_path / "output.txt")
    try:
        wait_for(lambda: (tmp_path / "release.held").exists() or process.poll() is not None, 60,
                 f"the stand-in build holding at step {HELD_AT}")
        assert process.poll() is None, (tmp_path / "output.txt").read_text()
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, release, latest_log(tmp_path / "build")


def test_log_holds_each_step_while_the_build_runs(ort_tree, tmp_path, build_venv, install_venv):
    process, release, log = held_build(ort_tree, tmp_path, build_venv, ["--venv", install_venv])
    try:
        wait_for(lambda: f"[{HELD_AT}/41] " in log.read_text(), WITHIN_SECONDS,
                 f"step {HELD_AT} in {log} while the build holds after it")
        assert process.poll() is None
        steps = [line.split("]")[0] + "]" for line in log.read_text().splitlines() if line.endswith(".o")
                 and line.startswith("[")]
        assert steps == [f"[{step}/41]" for step in range(1, HELD_AT + 1)]
    finally:
        release.touch()
    assert process.wait(timeout=120) == 0, (tmp_path / "output.txt").read_text()


def test_log_holds_the_failing_steps_output_before_the_build_ends(ort_tree, tmp_path, build_venv):
    """ninja prints a failed step's output at once, then waits for its other running jobs (minutes
    for a big kernel source): the log must show the failure during that wait."""
    process, release, log = held_build(ort_tree, tmp_path, build_venv, FAKE_ORT_FAIL_AT=str(HELD_AT))
    try:
        wait_for(lambda: "error: 'SpinPauseTypo' was not declared in this scope" in log.read_text(),
                 WITHIN_SECONDS, f"the compiler's error in {log} while ninja waits")
        assert process.poll() is None
        assert "FAILED: CMakeFiles/onnxruntime.dir/onnxruntime/core/providers/cpu/math/gemm.cc.o" in log.read_text()
    finally:
        release.touch()
    assert process.wait(timeout=60) == 5
