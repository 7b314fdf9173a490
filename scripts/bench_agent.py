#!/usr/bin/env python3
"""Overhead of `ortprof agent` on a service, side by side with the service alone.

The demo at 20 requests/s runs for whole agent intervals, alone and then under
`ortprof agent` (interval 60 s, window 10 s by default, pushing to a loopback
Pyroscope stand-in and serving metrics), in alternating rounds. Reported per
mode: the demo's own p50 / p95 over its whole run (so averaged over the
interval: the window and the analysis after it are in there) and, for the
agent, the CPU of its process tree (the agent, its perf record and perf script
children) from psutil: in steady state (between the end of its first window
and the end of its last: whole intervals, each with one window and the wait
after it) and over the whole run (including the one-off costs of the first
window: perf's start-up, the agent's first imports, the symbol cache).

    python scripts/bench_agent.py                       # 3 intervals of 60 s per round, 1 round
    python scripts/bench_agent.py --quick               # interval 20 s, window 5 s (not the budget's numbers)

Targets: p50 and p95 within 1.02x of plain; agent CPU at most 1% of a core.
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

PYTHON = sys.executable
ORTPROF = str(Path(PYTHON).parent / "ortprof")
DEMO_LINE = re.compile(r"p50=([0-9.]+)ms p95=([0-9.]+)ms cpu=([0-9.]+)%")


class Sink(BaseHTTPRequestHandler):
    pushes = 0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).pushes += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_argv(seconds, rate):
    return [PYTHON, "-m", "ortprof.demo", "--rate", str(rate), "--duration", str(seconds)]


def parse_demo(output):
    match = DEMO_LINE.search(output)
    if not match:
        raise SystemExit(f"demo output not understood:\n{output[-2000:]}")
    return tuple(float(x) for x in match.groups())


def tree_cpu(process):
    """CPU seconds of a process, its finished (waited) children and its live children."""
    try:
        times = process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in process.children(recursive=True):
            try:
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return None


def run_plain(seconds, rate, args):
    result = subprocess.run(demo_argv(seconds, rate), capture_output=True, text=True, check=True)
    return {"latency": parse_demo(result.stdout)}


def run_agent(seconds, rate, args):
    port = args.sink_port
    workdir = tempfile.mkdtemp(prefix="bench-agent-")
    agent = subprocess.Popen([ORTPROF, "agent", "--match", f"ortprof.demo --rate {rate} --duration {seconds}$",
                              "--interval", str(args.interval), "--window", str(args.window),
                              "--pyroscope", f"http://127.0.0.1:{port}", "--metrics-port", str(free_port()),
                              "--metrics-addr", "127.0.0.1", "--work-dir", workdir],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    events = []

    def read_log():
        for line in agent.stderr:
            try:
                events.append((time.monotonic(), json.loads(line)))
            except ValueError:
                pass
    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    process = psutil.Process(agent.pid)
    while not any(event.get("event") == "agent-started" for _, event in events):
        if agent.poll() is not None:
            raise SystemExit("the agent exited before starting")
        time.sleep(0.1)
    time.sleep(2.0)   # the agent idles (rescans) before the service starts
    started_cpu, started_at = tree_cpu(process), time.monotonic()
    demo = subprocess.Popen(demo_argv(seconds, rate), stdout=subprocess.PIPE, text=True)
    found_cpu = found_at = None
    cycle_marks = []    # (time, agent CPU) right after each window's analysis: the same phase of each interval
    while demo.poll() is None:
        time.sleep(0.5)
        cpu = tree_cpu(process)
        cycles = sum(1 for _, event in events if event.get("event") == "cycle")
        if cycles > len(cycle_marks):
            cycle_marks.append((time.monotonic(), cpu))
        if found_at is None and any(event.get("event") == "process-found" for _, event in events):
            found_cpu, found_at = cpu, time.monotonic()
    output = demo.stdout.read()
    end_cpu, end_at = tree_cpu(process), time.monotonic()
    agent.terminate()
    code = agent.wait(timeout=60)
    reader.join(timeout=5)
    windows = [event for _, event in events if event.get("event") == "window"]
    steady = None
    if len(cycle_marks) >= 2:
        (first_at, first_cpu), (last_at, last_cpu) = cycle_marks[0], cycle_marks[-1]
        steady = 100 * (last_cpu - first_cpu) / (last_at - first_at)
    return {"latency": parse_demo(output), "agent_exit": code, "windows": len(windows),
            "steady_cpu_pct": steady, "steady_intervals": max(0, len(cycle_marks) - 1),
            "whole_run_cpu_pct": 100 * (end_cpu - found_cpu) / (end_at - found_at) if found_at else None,
            "with_idle_cpu_pct": 100 * (end_cpu - started_cpu) / (end_at - started_at),
            "window_cpu_pct": [w.get("cpu_pct") for w in windows]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--intervals", type=int, default=3,
                        help="demo length in agent intervals (steady state needs at least 3)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--quick", action="store_true", help="interval 20 s, window 5 s")
    args = parser.parse_args()
    if args.quick:
        args.interval, args.window = 20.0, 5.0
    load_at_start = os.getloadavg()   # other processes' load skews both latency and CPU figures
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    args.sink_port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seconds = int(args.interval * args.intervals)
    results = {"plain": [], "agent": []}
    for round_ in range(args.rounds):
        for mode, run in (("plain", run_plain), ("agent", run_agent)):
            outcome = run(seconds, args.rate, args)
            results[mode].append(outcome)
            print(f"round {round_ + 1} {mode}: {json.dumps(outcome)}", file=sys.stderr, flush=True)
    plain_p50 = statistics.median(r["latency"][0] for r in results["plain"])
    plain_p95 = statistics.median(r["latency"][1] for r in results["plain"])
    print(f"demo at {args.rate:g} req/s for {seconds} s per round; agent interval {args.interval:g} s, "
          f"window {args.window:g} s; {args.rounds} round(s); pushes received: {Sink.pushes}")
    print("load average (1/5/15 min) at start: {:.2f} {:.2f} {:.2f}; at end: {:.2f} {:.2f} {:.2f} ({} cores)".format(
        *load_at_start, *os.getloadavg(), os.cpu_count()))
    print("| mode | p50 ms | p50 x | p95 ms | p95 x | demo CPU % | agent CPU % of a core (steady / whole run) |")
    print("|---|---|---|---|---|---|---|")
    for mode, rows in results.items():
        p50 = statistics.median(r["latency"][0] for r in rows)
        p95 = statistics.median(r["latency"][1] for r in rows)
        cpu = statistics.median(r["latency"][2] for r in rows)
        agent_cpu = "-"
        if mode == "agent":
            steady = [r["steady_cpu_pct"] for r in rows if r["steady_cpu_pct"] is not None]
            whole = [r["whole_run_cpu_pct"] for r in rows if r["whole_run_cpu_pct"] is not None]
            agent_cpu = (f"{statistics.median(steady):.2f} / {statistics.median(whole):.2f}"
                         if steady else "fewer than 2 windows")
        print(f"| {mode} | {p50:.2f} | {p50 / plain_p50:.3f} | {p95:.2f} | {p95 / plain_p95:.3f} | {cpu:.1f} | {agent_cpu} |")
    server.shutdown()


if __name__ == "__main__":
    main()
