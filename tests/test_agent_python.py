"""ortprof agent and Python processes it did not launch: run() latency and session labels from
uprobes on the pybind11 dispatchers by default (nothing injected: the model and options are
unknown and the labels say so), from the startup hook's recording attached with --attach (model
and options in the labels; the service's methods its own again once the agent stops), and a
service in another mount namespace whose module path names no file in the agent's.

Fast: the labels' decisions, session numbers across windows, the probes' file argument, the
records file's read part freed. Live: services of tests/workloads started outside ortprof.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ortprof.agent.attachments import punch_read_part
from ortprof.agent.pybind import PythonProcess
from ortprof.agent.sessions import NONE_SET, UNKNOWN, SessionLabels, session_labels
from ortprof.agent.uprobes import PYBIND, ProbedFile
from ortprof.signals.capi.probes import probe_target
from ortprof.signals.pybind.timing import RETURNED, RunSpan
from test_agent import Lines

ROOT = Path(__file__).resolve().parent.parent
PYBIND_SERVICE = ROOT / "tests" / "workloads" / "pybind_service.py"
ATTACH_SERVICE = ROOT / "tests" / "workloads" / "attach_service.py"


# -- fast ------------------------------------------------------------------------------------------
def test_a_session_timed_by_the_probes_is_its_handle_with_model_and_options_unknown():
    record = {"event": "session", "session": 1, "source": "pybind", "handle": "0x7f00aa", "model": None,
              "options": {}, "options_known": False}
    assert session_labels([record]) == {1: SessionLabels("unknown@0x7f00aa", UNKNOWN, UNKNOWN)}


def test_an_attached_session_has_its_model_path_and_options_in_its_labels():
    record = {"event": "session", "session": 2, "source": "attach", "handle": "0x7f00bb", "model": "/srv/m/bert.onnx",
              "options_known": True,
              "options": {"intra_op_num_threads": 2, "inter_op_num_threads": 1, "execution_mode": "ORT_SEQUENTIAL",
                          "graph_optimization_level": "ORT_ENABLE_ALL", "enable_profiling": False,
                          "config": {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}}}
    assert session_labels([record])[2] == SessionLabels(
        "bert.onnx@0x7f00bb", "/srv/m/bert.onnx",
        "intra_op_num_threads=2,inter_op_num_threads=1,execution_mode=ORT_SEQUENTIAL,"
        "graph_optimization_level=ORT_ENABLE_ALL,session.inter_op.allow_spinning=0,"
        "session.intra_op.allow_spinning=0")


def test_labels_of_a_model_in_memory_a_c_api_creation_without_options_and_an_old_hook_record():
    in_memory = {"event": "session", "session": 1, "handle": "0x10", "model": "<1573280 bytes>",
                 "options": {"intra_op_num_threads": 1, "config": {}}}
    created = {"event": "session", "session": 2, "source": "capi", "handle": "0x20", "model": "/m/a.onnx",
               "options": {"config": {}}, "options_known": True}
    old_hook = {"event": "session", "session": 3, "model": "/m/b.onnx", "options": {"intra_op_num_threads": 4}}
    labels = session_labels([in_memory, created, old_hook, {"event": "runs", "runs": []}])
    assert labels == {1: SessionLabels("<1573280 bytes>@0x10", "<1573280 bytes>", "intra_op_num_threads=1"),
                      2: SessionLabels("a.onnx@0x20", "/m/a.onnx", NONE_SET),
                      3: SessionLabels("b.onnx#3", "/m/b.onnx", "intra_op_num_threads=4")}


def _span(session, start_ms, ms=2.0, tid=7, outcome=RETURNED):
    return RunSpan("run", 0, 42, tid, int(start_ms * 1e6), int((start_ms + ms) * 1e6), outcome, session)


def test_a_python_process_keeps_its_session_numbers_across_windows():
    sites = SimpleNamespace(module_in_process="/site/onnxruntime_pybind11_state.so", layout="flags9")
    process = PythonProcess(ProbedFile("/site/m.so", "m0", kind=PYBIND, sites=sites, ort_version="1.31.1"))
    first = process.window_records([_span(0xA0, 0), _span(0xB0, 10), _span(0xA0, 100)], 42)
    second = process.window_records([_span(0xB0, 60_000), _span(0xC0, 60_010, outcome="raised")], 42)
    assert {r["handle"]: r["session"] for r in first if r["event"] == "session"} == {"0xa0": 1, "0xb0": 2}
    (session,) = [r for r in second if r["event"] == "session"]
    assert (session["handle"], session["session"], session["options_known"]) == ("0xb0", 2, False)
    (runs,) = [r for r in second if r["event"] == "runs"]
    assert [run[0] for run in runs["runs"]] == [2]            # the raised run is not timed
    assert session_labels(second)[2] == SessionLabels("unknown@0xb0", UNKNOWN, UNKNOWN)


def test_a_file_of_another_mount_namespace_is_named_for_perf_probe_in_the_process_s_namespace(tmp_path):
    here = tmp_path / "lib.so"
    here.write_bytes(b"\x7fELF")
    own = f"/proc/{os.getpid()}/root{here}"
    assert probe_target(own) == ["-x", str(here)]                    # the same file: the plain path
    elsewhere = f"/proc/{os.getpid()}/root{tmp_path}/only-in-the-container.so"
    assert probe_target(elsewhere) == ["--target-ns", str(os.getpid()), "-x", f"{tmp_path}/only-in-the-container.so"]
    assert probe_target(str(here)) == ["-x", str(here)]


def test_the_read_part_of_a_records_file_is_freed_and_what_follows_kept(tmp_path):
    path = tmp_path / "hook-1.jsonl"
    line = b'{"event": "runs", "runs": [[1, 1.0, 0.001, 1, "run"]]}\n'
    path.write_bytes(line * 20000)                        # ~1 MB
    size, allocated = path.stat().st_size, path.stat().st_blocks
    try:
        punch_read_part(str(path), size - 1000)
    except OSError as error:
        pytest.skip(f"{tmp_path}'s filesystem cannot punch holes: {error}")
    assert path.stat().st_size == size and path.stat().st_blocks < allocated / 10
    with open(path, "rb") as stream:
        stream.seek(size - 1000)
        assert stream.read() == (line * 20000)[size - 1000:]


# -- live ------------------------------------------------------------------------------------------
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("perf") is None,
                                reason="uprobes need root and perf")


def start_service(out, script=PYBIND_SERVICE, *arguments, prefix=(), warm=1.0):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([*prefix, sys.executable, str(script), "--out", str(out), *arguments],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (out / "latency.txt").exists() or not (out / "latency.txt").read_text().count("\n") >= 3:
        if process.poll() is not None:
            pytest.fail(f"the service exited {process.returncode}: {process.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "the service did not run"
        time.sleep(0.05)
    time.sleep(warm)
    return process


def stop(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def own_runs(out):
    return [tuple(float(x) for x in line.split()) for line in (Path(out) / "latency.txt").read_text().splitlines()
            if line.strip()]


def in_process_agent(tmp_path, monkeypatch, pid, **options):
    from ortprof.agent.logs import StructuredLog
    from ortprof.agent.runner import Agent, AgentOptions
    from ortprof.agent.window import WindowOptions
    monkeypatch.setattr(Agent, "_install_signals", lambda self: None)   # pytest keeps its own
    monkeypatch.setenv("PERF_BUILDID_DIR", str(tmp_path / "buildid"))
    lines = Lines()
    agent = Agent(AgentOptions(pids=(pid,), window=WindowOptions(seconds=4), work_dir=str(tmp_path / "work"),
                               nice=0, **options), StructuredLog(lines))
    return agent, lines.records


def histogram(agent, pid):
    """{(session, model, options): (count, sum)} of ortprof_run_duration_seconds for `pid`."""
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(agent.metrics.registry).decode())}
    series = {}
    for sample in families["ortprof_run_duration_seconds"].samples:
        if sample.labels.get("pid") != str(pid):
            continue
        key = (sample.labels["session"], sample.labels["model"], sample.labels["options"])
        count, total = series.get(key, (0, 0.0))
        if sample.name.endswith("_count"):
            count = sample.value
        elif sample.name.endswith("_sum"):
            total = sample.value
        series[key] = (count, total)
    return series


def probe_groups(owner):
    listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    return f"ortprof_{owner}_" in listed


def check_against_the_service(result, out):
    """The window's runs (its report's) are the service's: each nested in one of its own runs, none
    of its runs inside the timed span missed, p50 within 10% or 1 ms of its own."""
    runs = sorted((run.start, run.seconds) for run in result.profile.runs)
    assert len(runs) >= 60, len(runs)      # 4 s at 20/s
    first, last = runs[0][0], runs[-1][0] + runs[-1][1]
    own = [(start, duration) for start, duration in own_runs(out) if start >= first - 0.002 and start + duration <= last + 0.002]
    assert len(own) == len(runs), (len(own), len(runs))
    for start, duration in runs:
        assert sum(1 for s, d in own if s <= start and start + duration <= s + d + 0.0002) == 1, (start, duration)
    timed, mine = statistics.median(r[1] for r in runs), statistics.median(d for _, d in own)
    assert abs(timed - mine) <= max(0.1 * mine, 0.001), (timed, mine)
    return runs


@pytest.mark.live
@needs_root
def test_a_service_started_outside_ortprof_gets_latency_and_handle_labels_from_the_probes(tmp_path, monkeypatch):
    out = tmp_path / "service"
    service = start_service(out, PYBIND_SERVICE, "--seconds", "60", "--rate", "20")
    handle = hex(json.loads((out / "ready.json").read_text())["session"])
    agent, lines = in_process_agent(tmp_path, monkeypatch, service.pid)
    try:
        (result,) = agent.once()
        left = probe_groups(os.getpid())
    finally:
        stop(service)
    assert not left and not agent.uprobes.files
    assert [line for line in lines if line["event"] == "pybind-probed"]
    runs = check_against_the_service(result, out)
    (session,) = result.report.sessions
    assert (session.source, session.handle, session.model, session.options_known) == ("pybind", handle, None, False)
    assert session.runs == len(result.runs) == len(runs)
    assert histogram(agent, service.pid) == {(f"unknown@{handle}", UNKNOWN, UNKNOWN): (
        len(runs), pytest.approx(sum(run[1] for run in runs), rel=1e-6))}
    assert any(t.role == "caller" for t in result.report.threads)


def probe_of(out, name, timeout=15):
    """attach_service's view of itself (its methods, ortprof's module, threads, descriptors)."""
    (Path(out) / f"probe-{name}").touch()
    answer = Path(out) / f"probe-{name}.json"
    deadline = time.monotonic() + timeout
    while not answer.exists():
        assert time.monotonic() < deadline, "the service did not answer"
        time.sleep(0.05)
    return json.loads(answer.read_text())


@pytest.mark.live
@needs_root
def test_with_attach_the_labels_have_the_model_and_options_and_the_service_is_its_own_after(tmp_path, monkeypatch):
    if shutil.which("gdb") is None:
        pytest.skip("--attach needs gdb")
    out = tmp_path / "service"
    model = tmp_path / "model.onnx"
    subprocess.run([sys.executable, str(ATTACH_SERVICE), "--out", str(out), "--save-model", str(model)], check=True)
    service = start_service(out, ATTACH_SERVICE, "--model", str(model), "--rate", "20", "--threads", "2")
    agent, lines = in_process_agent(tmp_path, monkeypatch, service.pid, attach=True)
    try:
        before = probe_of(out, "before")
        (result,) = agent.once()
        after = probe_of(out, "after")
        left = probe_groups(os.getpid())
    finally:
        stop(service)
    assert [line["event"] for line in lines if line["event"] in ("attached", "detached")] == ["attached", "detached"]
    assert not [line for line in lines if line["event"] in ("pybind-probed", "attach-refused")]   # one source of runs
    assert not left and not (tmp_path / "work" / "attach").exists()
    check_against_the_service(result, out)
    (session,) = result.report.sessions
    assert (session.source, session.model, session.options_known) == ("attach", str(model), True)
    (labels,) = histogram(agent, service.pid)
    assert labels[0] == f"model.onnx@{session.handle}" and labels[1] == str(model)
    assert "intra_op_num_threads=2" in labels[2] and "session.intra_op.allow_spinning=0" in labels[2]
    # the service's methods are its own again, nothing of ortprof's is left in it
    for key in ("init_is_original", "run_is_original", "run_with_iobinding_is_original", "add_entry_is_original"):
        assert before[key] and after[key], key
    assert not after["module"] and not after["session_attribute"] and not after["patched_flag"]
    assert after["threads"] == before["threads"] and sorted(after["fds"]) == sorted(before["fds"])


NAMESPACED = """
set -e
mount --make-rprivate /
mount --bind "$1" "$2/onnxruntime"
shift 2
exec "$@"
"""


@pytest.mark.live
@needs_root
def test_a_service_in_another_mount_namespace_is_probed_through_its_own_path(tmp_path, monkeypatch):
    """The module's path in the service's mount namespace names no file in the agent's (a bind mount
    seen only there): the probes still time its runs."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare")
    import onnxruntime
    package = os.path.dirname(onnxruntime.__file__)
    mounted = tmp_path / "mnt"
    (mounted / "onnxruntime").mkdir(parents=True)           # empty here: the package only in its namespace
    script = tmp_path / "namespaced.sh"
    script.write_text(NAMESPACED)
    out = tmp_path / "service"
    monkeypatch.setenv("PYTHONPATH", str(mounted))
    service = start_service(out, PYBIND_SERVICE, "--seconds", "60", "--rate", "20",
                            prefix=("unshare", "--mount", "--fork", "--kill-child", "sh", str(script), package,
                                    str(mounted)))
    monkeypatch.delenv("PYTHONPATH")
    pid = json.loads((out / "ready.json").read_text())["pid"]
    maps = Path(f"/proc/{pid}/maps").read_text()
    module = next(line.split()[-1] for line in maps.splitlines() if "onnxruntime_pybind11_state" in line)
    assert module.startswith(str(mounted)) and not os.path.exists(module)    # no such file here
    agent, lines = in_process_agent(tmp_path, monkeypatch, pid)
    try:
        (result,) = agent.once()
    finally:
        stop(service)
    assert not [line for line in lines if line["event"].endswith("-not-timed")], lines
    check_against_the_service(result, out)
