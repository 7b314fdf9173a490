"""ortprof agent: Pyroscope pushes (a loopback server implementing the /ingest contract the
pyroscope-io clients use), the bounded spool, error answers, the metrics endpoint (parsed with
prometheus_client's own parser) and live windows of the real demo under the real perf.
Loopback addresses only.
"""
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from types import SimpleNamespace
from urllib.request import urlopen

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from live import DEMO, ORTPROF
from ortprof.agent import pyroscope
from ortprof.agent.discovery import container_of
from ortprof.agent.logs import StructuredLog
from ortprof.agent.perfsession import PerfSession
from ortprof.agent.window import WindowOptions
from ortprof.analysis.perfscript import PerfScriptStream
from ortprof.agent.pyroscope import Pusher, Spool, app_name, check_url
from ortprof.environment import ort_native_module
from ortprof.exporters import pprof_proto
from ortprof.hook import hook_environment
from test_pprof import go_pprof, go_raw_samples


# -- a Pyroscope stand-in ---------------------------------------------------------------------
class Ingest:
    """POST /ingest as Pyroscope takes it: query name/from/until/format/sampleRate/spyName, the
    gzipped profile.proto in the multipart form field "profile". `answers` scripts the status codes."""

    def __init__(self, port=0):
        self.received, self.answers, self.problems = [], [], []
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = ingest.answers.pop(0) if ingest.answers else 200
                if status == 200:
                    ingest.accept(self.path, self.headers, body)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"stand-in says no" if status != 200 else b"")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accept(self, path, headers, body):
        url = urlsplit(path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        if url.path != "/ingest":
            self.problems.append(f"path {url.path}")
        for key in ("name", "from", "until", "format", "sampleRate", "spyName"):
            if key not in query:
                self.problems.append(f"no {key}")
        if query.get("format") != "pprof" or int(query["until"]) <= int(query["from"]):
            self.problems.append(f"bad query {query}")
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body)
        parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        if "profile" not in parts:
            self.problems.append(f"no profile field in {list(parts)}")
            return
        self.received.append({"query": query, "profile": parts["profile"].get_payload(decode=True),
                              "headers": headers})

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Lines:
    """A StructuredLog target that keeps the parsed lines."""

    def __init__(self):
        self.records = []

    def write(self, text):
        self.records.extend(json.loads(line) for line in text.splitlines() if line)

    def flush(self):
        pass

    def events(self, name):
        return [record for record in self.records if record["event"] == name]


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr(pyroscope, "BACKOFF_FIRST", 0.05)
    monkeypatch.setattr(pyroscope, "BACKOFF_MAX", 0.2)


def pusher_to(url, tmp_path, max_bytes=1 << 20):
    lines = Lines()
    log = StructuredLog(lines)
    spool = Spool(str(tmp_path / "spool"), max_bytes, log)
    return Pusher(url, spool, log, user="ingest", password="s3cret", tenant="team-a"), lines


def push_numbered(pusher, count, first=0):
    for index in range(first, first + count):
        pusher.push("svc", {"host": "h", "pid": index}, 1000 + index, 1010 + index, 49, f"profile {index}".encode())


# -- units --------------------------------------------------------------------------------------
def test_container_and_pod_from_cgroup_paths():
    docker = "0::/system.slice/docker-" + "ab" * 32 + ".scope\n"
    assert container_of(docker) == ("ab" * 6, None)
    uid = "3f1c2a9e-7b1d-4c55-9e0a-2a4b6c8d0e1f"
    systemd_k8s = (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid.replace('-', '_')}"
                   ".slice/cri-containerd-" + "cd" * 32 + ".scope\n")
    assert container_of(systemd_k8s) == ("cd" * 6, uid)
    cgroupfs_v1 = f"12:cpu,cpuacct:/kubepods/besteffort/pod{uid}/" + "ef" * 32 + "\n1:name=systemd:/\n"
    assert container_of(cgroupfs_v1) == ("ef" * 6, uid)
    assert container_of("0::/user.slice/user-0.slice/session-3.scope\n") == (None, None)


def test_app_name_and_url_checks():
    assert app_name("my model", {"pid": 12, "pod": "", "container": None, "host": "node-1"}) == \
        "my_model{host=node-1,pid=12}"
    assert app_name("x", {"ort_version": "1.31.1", "k": "a,b}c"}) == "x{k=a_b_c,ort_version=1.31.1}"
    assert check_url("http://127.0.0.1:4040") is None
    assert "scheme" in check_url("ftp://127.0.0.1/")
    assert "host" in check_url("http://")
    assert "not a URL" in check_url("http://127.0.0.1:99999999")


def test_spool_bound_drops_oldest_first(tmp_path):
    lines = Lines()
    spool = Spool(str(tmp_path), max_bytes=2000, log=StructuredLog(lines))
    for index in range(12):
        spool.put({"n": index}, bytes([index]) * 300)
        assert spool.size() <= 2000
    kept = [json.loads((tmp_path / name).read_bytes().split(b"\n", 1)[0])["n"] for name in spool.items()]
    assert kept == list(range(12 - len(kept), 12)) and len(kept) >= 5
    assert len(lines.events("spool-dropped")) == 12 - len(kept)
    # A new spool on the same directory goes on after the last one (a restarted agent keeps the order).
    last = spool.items()[-1]
    assert Spool(str(tmp_path), max_bytes=2000).put({"n": 12}, b"x") > last


def push_three(server, tmp_path):
    """Push three profiles to `server` until the spool is empty; the log lines."""
    pusher, lines = pusher_to(server.url, tmp_path)
    pusher.start()
    try:
        push_numbered(pusher, 3)
        assert pusher.drain(10)
    finally:
        pusher.stop()
        server.close()
    return lines


def test_pushes_follow_the_ingest_contract(tmp_path, fast_backoff):
    server = Ingest()
    lines = push_three(server, tmp_path)
    assert not server.problems
    assert [item["profile"] for item in server.received] == [b"profile 0", b"profile 1", b"profile 2"]
    first = server.received[0]
    assert first["query"] == {"name": "svc{host=h,pid=0}", "from": "1000", "until": "1010", "format": "pprof",
                              "sampleRate": "49", "spyName": "ortprof"}
    assert first["headers"]["X-Scope-OrgID"] == "team-a"
    assert first["headers"]["Authorization"] == "Basic aW5nZXN0OnMzY3JldA=="   # ingest:s3cret
    assert not lines.events("push-failed")


def test_server_down_spools_and_resends_in_order(tmp_path, fast_backoff):
    port = free_port()
    pusher, lines = pusher_to(f"http://127.0.0.1:{port}", tmp_path)
    pusher.start()
    try:
        push_numbered(pusher, 4)
        assert wait_for(lambda: lines.events("push-failed"))
        time.sleep(0.5)   # several retries while down
        assert len(pusher.spool.items()) == 4
        server = Ingest(port)
        try:
            assert pusher.drain(10)
            push_numbered(pusher, 1, first=4)
            assert pusher.drain(10)
        finally:
            server.close()
    finally:
        pusher.stop()
    assert [item["profile"] for item in server.received] == [f"profile {i}".encode() for i in range(5)]
    failed = lines.events("push-failed")
    assert len(failed) == 1 and "cannot reach" in failed[0]["reason"]   # one line however many retries
    assert len(lines.events("push-resumed")) == 1


def test_error_answers_one_line_each_and_pushing_goes_on(tmp_path, fast_backoff):
    server = Ingest()
    server.answers = [503, 503, 503, 400]   # down for a while, then one profile refused
    lines = push_three(server, tmp_path)
    failed, rejected = lines.events("push-failed"), lines.events("push-rejected")
    assert len(failed) == 1 and "HTTP 503" in failed[0]["reason"]
    assert len(rejected) == 1 and "HTTP 400" in rejected[0]["reason"] and "stand-in says no" in rejected[0]["reason"]
    assert [item["profile"] for item in server.received] == [b"profile 1", b"profile 2"]   # 0 was refused


# -- live ---------------------------------------------------------------------------------------
def start_demo(tmp_path, *args, hook=True, duration=60):
    env = dict(os.environ)
    if hook:
        (tmp_path / "hook").mkdir()
        env = hook_environment(env, tmp_path / "hook", warmup_runs=1)
    demo = subprocess.Popen([*DEMO, "--rate", "20", "--duration", str(duration), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: demo.poll() is None and ort_native_module(demo.pid) is not None, 60), \
        "the demo did not load ORT"
    return demo


def start_agent(tmp_path, *args):
    log = open(tmp_path / "agent.log", "w")
    agent = subprocess.Popen([ORTPROF, "agent", "--work-dir", str(tmp_path / "work"), "--nice", "0", *args],
                             stdout=subprocess.DEVNULL, stderr=log)
    return agent


def agent_events(tmp_path, name=None):
    records = []
    for line in (tmp_path / "agent.log").read_text().splitlines():
        records.append(json.loads(line))   # every line is one JSON object
    return [r for r in records if name is None or r["event"] == name]


def stop_agent(agent):
    agent.send_signal(signal.SIGTERM)
    return agent.wait(timeout=60)


def metrics_of(port):
    text = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


@pytest.mark.slow
def test_live_windows_pushed_as_pprof_matching_their_reports_and_metrics(tmp_path):
    server = Ingest()
    demo = start_demo(tmp_path)
    metrics_port = free_port()
    agent = start_agent(tmp_path, "--pid", str(demo.pid), "--interval", "3", "--window", "2", "--service", "bert",
                        "--pyroscope", server.url, "--tenant", "team-a", "--metrics-port", str(metrics_port),
                        "--metrics-addr", "127.0.0.1")
    try:
        assert wait_for(lambda: len(server.received) >= 2, 90), (tmp_path / "agent.log").read_text()
        # run() latencies are read at the start of each interval: wait for the first that saw some
        # (the demo may still have been loading its model at the previous one).
        scraped = {}

        def latency_seen():
            scraped.update(metrics_of(metrics_port))
            family = scraped.get("ortprof_run_duration_seconds")
            return family is not None and any(s.name.endswith("_count") and s.value > 0 for s in family.samples)
        assert wait_for(latency_seen, 30)
        metrics = scraped
        assert stop_agent(agent) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        demo.kill()
        demo.wait()
        server.close()
    assert not server.problems
    windows = agent_events(tmp_path, "window")
    assert agent_events(tmp_path, "agent-stopped") and not agent_events(tmp_path, "window-failed")
    for pushed, window in zip(server.received, windows):
        name = pushed["query"]["name"]
        assert name.startswith("bert{") and f"pid={demo.pid}" in name and "service_name=bert" in name
        assert f"host={socket.gethostname()}" in name and "ort_version=" in name
        assert pushed["headers"]["X-Scope-OrgID"] == "team-a"
        path = tmp_path / f"window-{window['seconds']}.pb.gz"
        path.write_bytes(pushed["profile"])
        text = go_pprof(path, "-raw")
        samples = go_raw_samples(text)
        assert sum(count for count, _, _ in samples) == window["samples"]
        message = pprof_proto.Profile()
        message.ParseFromString(gzip.decompress(pushed["profile"]))
        seconds = message.duration_nanos / 1e9
        assert seconds == pytest.approx(window["seconds"], abs=0.01)
        total_pct = 100 * sum(ns for _, ns, _ in samples) / 1e9 / seconds
        assert total_pct == pytest.approx(window["cpu_pct"], abs=0.02)
        spin_pct = 100 * sum(ns for _, ns, labels in samples if labels.get("category") == "spin") / 1e9 / seconds
        assert spin_pct == pytest.approx(window["spin_pct"], abs=0.05)
        roles = {labels["thread_role"] for _, _, labels in samples}
        assert "caller" in roles and "intra-op-worker" in roles   # the hook names the caller
    # Metrics (scraped after the first windows): what those windows logged, summed.
    def values(family, suffix=""):
        return [s.value for s in metrics[family].samples
                if s.name == family + suffix and s.labels.get("service") == "bert" and s.labels.get("pid") == str(demo.pid)]
    profiled = values("ortprof_profiled_seconds", "_total")[0]
    logged = windows[:len(windows)]
    while logged and sum(w["seconds"] for w in logged) > profiled + 0.05:
        logged = logged[:-1]       # windows that ended after the scrape
    cpu_total = sum(values("ortprof_cpu_seconds", "_total"))
    assert profiled == pytest.approx(sum(w["seconds"] for w in logged), abs=0.05)
    assert cpu_total == pytest.approx(sum(w["cpu_pct"] / 100 * w["seconds"] for w in logged), rel=0.01)
    assert 0 < values("ortprof_spin_cpu_ratio")[0] <= 1
    findings = {s.labels["id"] for s in metrics["ortprof_finding"].samples if s.value == 1}
    assert findings == set(logged[-1]["findings"].split(","))
    runs = values("ortprof_run_duration_seconds", "_count")
    assert runs and runs[0] > 10      # the hook's run() records, 20 per second
    assert values("ortprof_pool_threads")[0] >= 2
    assert [s.value for s in metrics["ortprof_agent_cpu_seconds"].samples][0] > 0
    assert metrics["ortprof_process_info"].samples[0].labels["ort_version"]
    assert not list((tmp_path / "work" / "windows").glob("window-*"))   # no raw perf data left


@pytest.mark.slow
def test_live_bad_and_unreachable_pyroscope_one_line_each_agent_keeps_running(tmp_path):
    demo = start_demo(tmp_path, hook=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "down").mkdir()
    bad = start_agent(tmp_path / "bad", "--pid", str(demo.pid), "--interval", "2", "--window", "1",
                      "--pyroscope", "ftp://127.0.0.1/")
    closed = free_port()
    down = start_agent(tmp_path / "down", "--pid", str(demo.pid), "--interval", "2", "--window", "1",
                       "--pyroscope", f"http://127.0.0.1:{closed}")
    try:
        assert wait_for(lambda: len(agent_events(tmp_path / "bad", "window")) >= 2 and
                        len(agent_events(tmp_path / "down", "window")) >= 2, 90)
        assert stop_agent(bad) == 0 and stop_agent(down) == 0
    finally:
        for process in (bad, down, demo):
            if process.poll() is None:
                process.kill()
    disabled = agent_events(tmp_path / "bad", "pyroscope-disabled")
    assert len(disabled) == 1 and "scheme" in disabled[0]["reason"]
    failed = agent_events(tmp_path / "down", "push-failed")
    assert len(failed) == 1 and "cannot reach" in failed[0]["reason"]
    assert list((tmp_path / "down" / "work" / "spool").glob("*.push"))   # kept for the next start


@pytest.mark.slow
def test_live_once_with_a_process_that_exits_mid_window(tmp_path):
    demo = start_demo(tmp_path, hook=False, duration=5)
    result = subprocess.run([ORTPROF, "agent", "--once", "--pid", str(demo.pid), "--window", "30",
                             "--work-dir", str(tmp_path / "work"), "--nice", "0"],
                            capture_output=True, text=True, timeout=120)
    demo.wait()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    window = [json.loads(line) for line in result.stderr.splitlines() if '"window' in line]
    assert window and window[0]["event"] in ("window", "window-empty") and window[0]["exited"] is True
    assert window[0].get("seconds", 0) < 10 if window[0]["event"] == "window" else True
    assert f"pid {demo.pid}" in result.stdout
    if window[0]["event"] == "window":   # the report names the process, not its deleted run directory
        assert "one agent window" in result.stdout and str(tmp_path / "work") not in result.stdout


@pytest.mark.live
def test_once_without_ort_processes_is_one_clear_error(tmp_path):
    result = subprocess.run([ORTPROF, "agent", "--once", "--pid", "999999999", "--work-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "no running process has ORT loaded" in result.stderr and "Traceback" not in result.stderr


def perf_processes_in(work_dir):
    """pid -> command line of the `perf record` processes recording into `work_dir`."""
    found = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if (process.info.get("name") == "perf" and cmdline[1:2] == ["record"]
                and any(str(work_dir) in arg for arg in cmdline)):
            found[process.pid] = cmdline
    return found


@pytest.mark.slow
def test_live_one_perf_per_process_across_windows_and_none_after_sigterm(tmp_path):
    demo = start_demo(tmp_path, hook=False)
    agent = start_agent(tmp_path, "--pid", str(demo.pid), "--interval", "2", "--window", "1")
    seen = {}
    try:
        def three_windows():
            seen.update(perf_processes_in(tmp_path / "work"))
            return len(agent_events(tmp_path, "window")) >= 3
        assert wait_for(three_windows, 90), (tmp_path / "agent.log").read_text()
        assert stop_agent(agent) == 0
        leftover = perf_processes_in(tmp_path / "work")
    finally:
        if agent.poll() is None:
            agent.kill()
        demo.kill()
        demo.wait()
    assert len(seen) == 1, seen       # one perf for all the windows of the process
    cmdline = next(iter(seen.values()))
    assert cmdline[cmdline.index("-D") + 1] == "-1" and "--switch-output=signal" in cmdline
    assert any(arg.startswith("fifo:") for arg in cmdline)
    windows = agent_events(tmp_path, "window")
    assert all(window["samples"] > 0 for window in windows)   # each window enabled and cut apart
    assert not leftover and not (tmp_path / "work" / "windows").exists()   # perf ended, its data gone


BUSY_IN_A_NEW_LIBRARY = """
import ctypes, ctypes.util, os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
bz2 = ctypes.CDLL(ctypes.util.find_library("bz2"))   # mapped while perf's events are off
data, end = b"ortprof" * 200000, time.time() + 30
while time.time() < end:
    out, size = ctypes.create_string_buffer(len(data) * 2), ctypes.c_uint(len(data) * 2)
    bz2.BZ2_bzBuffToBuffCompress(out, ctypes.byref(size), data, len(data), 9, 0, 0)
"""


@pytest.mark.slow
def test_live_library_mapped_between_windows_is_named_in_the_next(tmp_path):
    """The window's file names a library mapped while perf's sampling events were off (perf's
    side-band event keeps tracking mmaps between windows)."""
    import ctypes.util
    if not ctypes.util.find_library("bz2"):
        pytest.skip("no libbz2 on this machine")
    go = tmp_path / "go"
    target = subprocess.Popen([sys.executable, "-c", BUSY_IN_A_NEW_LIBRARY, str(go)])
    session = PerfSession(SimpleNamespace(pid=target.pid), WindowOptions(), "perf", tmp_path).start()
    try:
        assert session.begin()
        time.sleep(0.3)
        assert session.end()
        first = session.cut()
        assert first is not None and first.stat().st_size > 0
        first.unlink()
        go.touch()
        assert wait_for(lambda: "libbz2" in Path(f"/proc/{target.pid}/maps").read_text(), 10)
        assert session.begin()
        time.sleep(1.5)
        assert session.end()
        window = session.cut()
        with PerfScriptStream(window) as samples:
            dsos = [sample.frames[0].dso for sample in samples if sample.frames]
        assert sum("libbz2" in dso for dso in dsos) > len(dsos) / 2, dsos[:20]
        assert session.running() and session.windows == 2
    finally:
        session.close()
        target.kill()
        target.wait()
    assert not session.running() and not session.directory.exists()
