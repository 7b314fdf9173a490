"""Uprobes on ORT's C API (ortprof.signals.capi): adding, recording, removing, and the calls they show.

The live tests add real probes with perf (root) to the library the ORT wheel ships,
and drive it with a C client (tests/c/ortapi_client.c, compiled here) that reaches
the OrtApi table the way non-Python clients do. The fast tests read a `perf script`
excerpt of such a recording (fixtures/capi-perf-script.txt, 3 runs).
"""
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ortprof import environment as env
from ortprof.doctor import run_checks
from ortprof.errors import InputError
from ortprof.signals.capi import probes
from ortprof.signals.capi.probes import Owner, Uprobes, installed_uprobes
from ortprof.signals.capi.spans import SCRIPT_FIELDS, pair_calls, parse_events
from ortprof.symbols.ortapi import read_ort_api
from test_ortapi import FAKE_LIBRARY, WHEEL_LIBRARY

TESTS = Path(__file__).resolve().parent
CLIENT_SOURCE = TESTS / "c" / "ortapi_client.c"
PERF_SCRIPT = TESTS / "fixtures" / "capi-perf-script.txt"
PERF = env.find_tool("perf")
MODEL_SIDE = 256


def live_with_perf_as_root(test):
    """Marks a test that adds uprobes: live, and skipped without perf or root."""
    for mark in (pytest.mark.live, pytest.mark.skipif(PERF is None, reason="perf is not installed"),
                 pytest.mark.skipif(os.geteuid() != 0, reason="adding uprobes needs root")):
        test = mark(test)
    return test


# -- fast: names, definitions, perf's words, the calls of a recording --------------------
def test_group_names_its_owner():
    owner = Owner(1234, 567890)
    assert owner.group == "ortprof_1234_567890"
    assert probes.group_owner(owner.group) == owner
    assert probes.group_owner("ortprof_cost") is None and probes.group_owner("probe_libc") is None
    assert probes.event_function("Run__1234") == ("Run", "1234", False)
    assert probes.event_function("KernelInfoGetAttribute_float__1234_node__return") == \
        ("KernelInfoGetAttribute_float", "1234_node", True)


def test_probe_definitions_are_perf_probe_forms():
    table = read_ort_api(WHEEL_LIBRARY)
    definitions = probes.probe_definitions("ortprof_1_2", "1", table, ["Run", "CreateSession", "AddSessionConfigEntry",
                                                                       "SetIntraOpNumThreads", "ReleaseSession"])
    run, create = table.function("Run").file_offset, table.function("CreateSession").file_offset
    assert definitions[:4] == [f"ortprof_1_2:Run__1=0x{run:x} session=%di",
                               f"ortprof_1_2:Run__1=0x{run:x}%return status=%ax",
                               f"ortprof_1_2:CreateSession__1=0x{create:x} model=+0(%si):string options=%dx",
                               f"ortprof_1_2:CreateSession__1=0x{create:x}%return status=%ax"]
    assert definitions[4].endswith(" options=%di key=+0(%si):string value=+0(%dx):string")
    assert definitions[6].endswith(" options=%di threads=%si:s32")
    assert definitions[9].endswith("%return")       # ReleaseSession returns nothing
    with pytest.raises(InputError, match="no RunAsync .added in API version 16"):
        probes.probe_definitions("ortprof_1_2", "1", read_ort_api(FAKE_LIBRARY), ["RunAsync"])


def test_perf_probe_output():
    added = """Added new events:
  ortprof_9_1:Run__9   (on 0x3e8d80 in /lib/libonnxruntime.so.1.31.1 with session=%di)
  ortprof_9_1:Run__9__return (on 0x3e8d80%return in /lib/libonnxruntime.so.1.31.1 with status=%ax)

You can now use it in all perf tools, such as:

\tperf record -e ortprof_9_1:Run__9__return -aR sleep 1
"""
    assert probes._added_events(added) == ["ortprof_9_1:Run__9", "ortprof_9_1:Run__9__return"]
    refused = "No permission to write tracefs.\nPlease run this command again with sudo.\n  Error: Failed to add events.\n"
    assert probes._complaint(refused) == ("No permission to write tracefs. Please run this command again with sudo. "
                                          "Failed to add events.")


def test_calls_of_a_recording():
    calls = pair_calls(parse_events(PERF_SCRIPT.read_text().splitlines()))
    assert [c.function for c in calls] == ["CreateSessionOptions", "SetIntraOpNumThreads", "AddSessionConfigEntry",
                                           "CreateSession", "Run", "Run", "Run", "ReleaseSession",
                                           "ReleaseSessionOptions"]
    create = calls[3]
    assert create.arguments == {"model": "/tmp/m256.onnx", "options": "0x55c11d36c1f0"}
    assert create.returned == {"status": "0x0"} and not create.failed
    assert create.duration_ns == 2784544235524 - 2784538547528 and create.tag == "21467"
    assert calls[2].arguments["key"] == "session.intra_op.allow_spinning" and calls[2].arguments["value"] == "0"
    assert calls[1].arguments["threads"] == "1"
    runs = [c for c in calls if c.function == "Run"]
    assert {c.arguments["session"] for c in runs} == {"0x55c11d3ad670"}
    assert [c.duration_ns for c in runs] == [3052403, 2481073, 2382296]
    assert calls[7].returned == {} and calls[7].tid == calls[7].pid == 21472


def test_calls_cut_by_the_recording():
    lines = PERF_SCRIPT.read_text().splitlines()
    first_run = next(i for i, line in enumerate(lines) if ":Run__21467:" in line)
    # recording started inside the first run and stopped inside the last one
    calls = pair_calls(parse_events(lines[first_run + 1:first_run + 5]))
    assert [(c.function, c.start_ns is None, c.end_ns is None) for c in calls] == \
        [("Run", True, False), ("Run", False, False), ("Run", False, True)]
    assert [c.duration_ns is None for c in calls] == [True, False, True]


# -- live: probes on this machine -----------------------------------------------------------
def defined_groups():
    return probes.list_groups(PERF)


def uprobe_events():
    return Path("/sys/kernel/tracing/uprobe_events").read_text()


@live_with_perf_as_root
def test_add_list_remove():
    uprobes = Uprobes(PERF)
    try:
        added = uprobes.add(str(WHEEL_LIBRARY), ["Run", "CreateSession"])
        group, pid = uprobes.group, os.getpid()
        assert added == [f"{group}:Run__{pid}", f"{group}:Run__{pid}__return", f"{group}:CreateSession__{pid}",
                         f"{group}:CreateSession__{pid}__return"]
        assert uprobes.record_arguments() == [argument for event in added for argument in ("-e", event)]
        assert sorted(defined_groups()[group]) == sorted(event.split(":")[1] for event in added)
        run = read_ort_api(WHEEL_LIBRARY).function("Run").file_offset
        assert f"p:{group}/Run__{pid} {WHEEL_LIBRARY}:0x{run:016x} session=%di" in uprobe_events()
        assert f"r:{group}/Run__{pid}__return {WHEEL_LIBRARY}:0x{run:016x} status=%ax" in uprobe_events()
    finally:
        uprobes.remove()
    assert group not in defined_groups() and group not in uprobe_events()
    uprobes.remove()        # removing again: nothing to remove, no error


def exited_process_owner():
    """The owner identity of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    owner = Owner(child.pid, probes.process_start(child.pid))
    child.communicate(b"")
    return owner


@pytest.fixture
def sleeping_child():
    child = subprocess.Popen(["sleep", "120"])
    yield child
    child.kill()
    child.wait()


@live_with_perf_as_root
def test_stale_probes_of_gone_owners_are_removed_those_of_live_ones_kept(sleeping_child):
    live = Owner(sleeping_child.pid, probes.process_start(sleeping_child.pid))
    dead = exited_process_owner()
    reused_pid = Owner(sleeping_child.pid, live.start + 1)      # the same pid, another process's start
    sets = {owner: Uprobes(PERF, owner) for owner in (live, dead, reused_pid)}
    try:
        for owner, uprobes in sets.items():
            # event names are unique per pid: two processes alive cannot share one
            uprobes.add(str(WHEEL_LIBRARY), ["Run"], library_tag="reused" if owner is reused_pid else "")
        assert {live.group, dead.group, reused_pid.group} <= set(defined_groups())
        removed = probes.remove_stale(PERF)
        assert set(removed) >= {dead.group, reused_pid.group} and live.group not in removed
        groups = defined_groups()
        assert live.group in groups and dead.group not in groups and reused_pid.group not in groups
    finally:
        for uprobes in sets.values():
            uprobes.remove()


@live_with_perf_as_root
def test_removed_when_the_block_raises():
    with pytest.raises(ValueError):
        with installed_uprobes(PERF, str(WHEEL_LIBRARY), ["Run"]) as uprobes:
            group = uprobes.group
            assert group in defined_groups()
            raise ValueError("the workload failed")
    assert group not in defined_groups()


# A process holding probes until it is stopped: prints its group, then waits.
HOLDER = """
import sys, time
from ortprof.signals.capi.probes import installed_uprobes
with installed_uprobes(sys.argv[1], sys.argv[2], ["Run"]) as uprobes:
    print(uprobes.group, flush=True)
    time.sleep(120)
"""


@live_with_perf_as_root
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_stopped_owner_leaves_no_probes(stop):
    """SIGTERM and Ctrl+C: the holder removes its probes on its way out. SIGKILL leaves them,
    and the next ortprof (remove_stale) removes them."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, PERF, str(WHEEL_LIBRARY)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        group = holder.stdout.readline().strip()
        assert group.startswith(f"ortprof_{holder.pid}_"), holder.stderr.read()
        assert group in defined_groups()
        holder.send_signal(stop)
        holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert holder.returncode != 0
    if stop == signal.SIGKILL:
        assert group in defined_groups()
        assert group in probes.remove_stale(PERF)
    assert group not in defined_groups()


@live_with_perf_as_root
def test_doctor_uprobes_check_passes_and_cleans_up_after_the_dead():
    dead = exited_process_owner()
    Uprobes(PERF, dead).add(str(WHEEL_LIBRARY), ["Run"])
    check, = run_checks(["uprobes"], thorough=True)
    assert check.status == "ok", check
    assert "fired 1 time(s)" in check.detail and dead.group in check.detail
    assert dead.group not in defined_groups()
    assert not [group for group in defined_groups() if group.startswith(f"ortprof_{os.getpid()}_")]


# -- live: a C client's runs, seen by the probes and by the client itself -------------------
@pytest.fixture(scope="module")
def client(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    path = tmp_path_factory.mktemp("client") / "ortapi_client"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(path), str(CLIENT_SOURCE), "-ldl"], check=True)
    return str(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Eight chained 256x256 MatMuls (a few ms a run on one thread); IR 8 / opset 13, which ORT 1.31 reads."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [MODEL_SIDE, MODEL_SIDE])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [MODEL_SIDE, MODEL_SIDE])
    weight = numpy_helper.from_array(np.full((MODEL_SIDE, MODEL_SIDE), 0.01, dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", "w"], [f"h{i}"]) for i in range(8)]
    nodes.append(helper.make_node("Identity", ["h7"], ["y"]))
    graph = helper.make_graph(nodes, "chain", [x], [y], [weight])
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(built)
    path = tmp_path_factory.mktemp("model") / "chain.onnx"
    onnx.save(built, str(path))
    return str(path)


def record_client(tmp_path, uprobes, *client_command):
    """(client's stdout lines, calls from the probes) of the client run under perf record."""
    data = tmp_path / "capi.data"
    done = subprocess.run([PERF, "record", "-q", "-k", "CLOCK_MONOTONIC", "-o", str(data),
                           *uprobes.record_arguments(), "--", *client_command],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    script = subprocess.run([PERF, "script", "-i", str(data), "-F", SCRIPT_FIELDS, "--ns"],
                            capture_output=True, text=True, timeout=120)
    assert script.returncode == 0, script.stderr
    return done.stdout.splitlines(), pair_calls(parse_events(script.stdout.splitlines()))


@live_with_perf_as_root
def test_runs_seen_by_the_probes_match_the_clients_own_measurement(tmp_path, client, model):
    runs = 60
    with installed_uprobes(PERF, str(WHEEL_LIBRARY)) as uprobes:
        lines, calls = record_client(tmp_path, uprobes, client, str(WHEEL_LIBRARY), model, str(runs))
    own = [tuple(int(field) for field in line.split()[2:4]) for line in lines if line.startswith("run ")]
    probed = [c for c in calls if c.function == "Run"]
    assert len(own) == len(probed) == runs
    # same clock (CLOCK_MONOTONIC): each probed call lies inside the client's own timing of it
    for (begin, end), call in zip(own, probed):
        assert begin <= call.start_ns < call.end_ns <= end
        assert call.returned == {"status": "0x0"}
    own_p50 = statistics.median(end - begin for begin, end in own)
    probed_p50 = statistics.median(call.duration_ns for call in probed)
    assert abs(probed_p50 - own_p50) <= max(0.1 * own_p50, 2_000_000), (probed_p50, own_p50)
    by_function = {c.function: c for c in calls}
    assert by_function["CreateSession"].arguments["model"] == model
    assert by_function["CreateSession"].returned == {"status": "0x0"}
    assert by_function["SetIntraOpNumThreads"].arguments["threads"] == "1"
    assert by_function["AddSessionConfigEntry"].arguments["key"] == "session.intra_op.allow_spinning"
    options = by_function["CreateSession"].arguments["options"]
    assert by_function["SetIntraOpNumThreads"].arguments["options"] == options
    assert by_function["ReleaseSession"].arguments["session"] == probed[0].arguments["session"]


@pytest.mark.slow
@live_with_perf_as_root
def test_cost_of_a_probed_call(tmp_path, client):
    """A tight loop calling a probed function: what the entry and return probes cost per call
    (printed; the module docstring of probes.py records this machine's figure)."""
    calls = "100000"

    def per_call(lines):
        return float(next(line for line in lines if line.startswith("calls ")).split()[2])

    bare = subprocess.run([client, str(WHEEL_LIBRARY), "--calls", calls], capture_output=True, text=True, check=True)
    with installed_uprobes(PERF, str(WHEEL_LIBRARY), ["SetIntraOpNumThreads"]) as uprobes:
        started = time.monotonic()
        lines, probed_calls = record_client(tmp_path, uprobes, client, str(WHEEL_LIBRARY), "--calls", calls)
        assert time.monotonic() - started < 120
    cost_ns = per_call(lines) - per_call(bare.stdout.splitlines())
    print(f"entry+return uprobes under perf record: {cost_ns / 1000:.1f} us per call")
    # every call seen, but for the few events perf may drop at 100k calls in a second or two (a
    # lost return leaves its entry open-ended, so one call can count twice): within 0.1%
    seen = sum(c.function == "SetIntraOpNumThreads" for c in probed_calls)
    assert seen == pytest.approx(int(calls) + 1, rel=0.001), seen
    assert 0 < cost_ns < 100_000

