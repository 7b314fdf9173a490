"""Workloads that show (or do not show) a finding, for the captured run fixtures
tests/fixtures/run-* (how each was recorded: tests/fixtures/run-captures.md;
recorded by scripts/capture_fixture.py).

One InferenceSession on ortprof's demo encoder (all-MiniLM-L6-v2 shape, built
with `onnx`, no download) in a request loop. The workload logs, independently
of ortprof, what the tests check the report against, into the file --log:

    req mono=<run() start, CLOCK_MONOTONIC s> ms=<run() latency> n=<tokens> pre_ms=<CPU ms of pre-processing>
    proc mono=<s> tid=<tid> cpu_ns=<on-CPU ns, schedstat> vcsw=<voluntary switches> nvcsw=<involuntary switches>

`proc` lines cover every thread of the process (/proc/self/task), four times a
second, cumulative, so a reader can take any window. SIGTERM (ortprof stops the
workload after its window) ends the loop; a `summary` line closes the log.
"""
import argparse
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SNAPSHOT_SECONDS = 0.25


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10",
                        help="tokens per request, cycled: e.g. 8,8,8,8,8,8,8,8,8,64 (one long request in ten)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second; 0 = closed loop")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (ortprof stops it after its window)")
    parser.add_argument("--threads", type=int, default=None, help="intra_op_num_threads")
    parser.add_argument("--allow-spinning", choices=["0", "1"], default=None,
                        help="session.intra_op.allow_spinning")
    parser.add_argument("--caller-cpu", type=int, default=None,
                        help="pin the calling (main) thread to this CPU (0-based)")
    parser.add_argument("--worker-cpu", type=int, default=None,
                        help="pin the intra-op worker (--threads 2) there: session.intra_op_thread_affinities")
    parser.add_argument("--neighbour-cpu", type=int, default=None,
                        help="start a CPU-bound helper process pinned to this CPU (a noisy neighbour)")
    parser.add_argument("--log", required=True, help="file for the req/proc/summary lines")
    parser.add_argument("--preprocess-words", type=int, default=0,
                        help="pure-Python tokenizing of this many words before each run() (caller CPU outside ORT)")
    return parser.parse_args(argv)


def thread_snapshot():
    """[(tid, on-CPU ns, voluntary, involuntary context switches)] of every thread of this process."""
    rows = []
    for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as stream:
                cpu_ns = int(stream.read().split()[0])
            status = Path(f"/proc/self/task/{tid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        rows.append((tid, cpu_ns, int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])))
    return rows


def write_snapshot(out):
    now = time.monotonic()
    for tid, cpu_ns, vcsw, nvcsw in thread_snapshot():
        out.write(f"proc mono={now:.6f} tid={tid} cpu_ns={cpu_ns} vcsw={vcsw} nvcsw={nvcsw}\n")


def tokenize(words, text):
    """Pure-Python pre-processing: a toy tokenizer hashing each word's characters."""
    ids = []
    for word in text[:words]:
        value = 0
        for char in word:
            value = (value * 31 + ord(char)) % 30000
        ids.append(value)
    return ids


class _Stop(Exception):
    pass


def _stop(signum, frame):
    raise _Stop()


def start_neighbour(cpu, seconds):
    """A busy process pinned to `cpu`; it ends by itself after `seconds` even if we are killed."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    neighbour = subprocess.Popen([sys.executable, "-c", spin])
    os.sched_setaffinity(neighbour.pid, {cpu})
    return neighbour


def session_of(args):
    import onnxruntime as ort
    from ortprof.demo.model import demo_model_path
    options = ort.SessionOptions()
    if args.threads is not None:
        options.intra_op_num_threads = args.threads
    if args.allow_spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", args.allow_spinning)
    if args.worker_cpu is not None:   # ORT counts logical processors from 1
        options.add_session_config_entry("session.intra_op_thread_affinities", str(args.worker_cpu + 1))
    return ort.InferenceSession(str(demo_model_path("small")), options, providers=["CPUExecutionProvider"])


def request_loop(args, session, out):
    sizes = [int(size) for size in args.sizes.split(",")]
    feeds = [{i.name: np.ones((1, n), dtype=np.int64) for i in session.get_inputs()} for n in sizes]
    text = "the quick brown fox jumps over the lazy dog while a tokenizer reads each word".split()
    text *= args.preprocess_words // len(text) + 1
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    start = next_due = next_snapshot = time.monotonic()
    latencies = []
    try:
        while time.monotonic() - start < args.duration:
            now = time.monotonic()
            if now >= next_snapshot:
                write_snapshot(out)
                next_snapshot += SNAPSHOT_SECONDS
            if period and now < next_due:
                time.sleep(next_due - now)
            next_due += period
            index = len(latencies) % len(sizes)
            pre_ms = 0.0
            if args.preprocess_words:
                before = time.thread_time()
                tokenize(args.preprocess_words, text)
                pre_ms = (time.thread_time() - before) * 1000
            began = time.monotonic()
            t0 = time.perf_counter()
            session.run(None, feeds[index])
            latencies.append((time.perf_counter() - t0) * 1000)
            out.write(f"req mono={began:.6f} ms={latencies[-1]:.3f} n={sizes[index]} pre_ms={pre_ms:.3f}\n")
    except _Stop:
        pass
    write_snapshot(out)
    return latencies, time.monotonic() - start


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    neighbour = None
    out = open(args.log, "w", buffering=1 << 16)
    try:
        if args.neighbour_cpu is not None:
            neighbour = start_neighbour(args.neighbour_cpu, args.duration + 10)
            out.write(f"neighbour pid={neighbour.pid} cpu={args.neighbour_cpu}\n")
        if args.caller_cpu is not None:
            os.sched_setaffinity(0, {args.caller_cpu})   # this thread; ORT's worker gets its own affinity
        session = session_of(args)
        usage_start = resource.getrusage(resource.RUSAGE_SELF)
        latencies, elapsed = request_loop(args, session, out)
        usage = resource.getrusage(resource.RUSAGE_SELF)
    except _Stop:
        out.close()
        return 1   # stopped before the loop began
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    cpu = (usage.ru_utime + usage.ru_stime - usage_start.ru_utime - usage_start.ru_stime) / max(elapsed, 1e-9)
    ordered = sorted(latencies)

    def pick(q):
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")
    import onnxruntime as ort
    out.write(f"summary requests={len(latencies)} elapsed={elapsed:.1f}s p50={pick(50):.2f}ms p99={pick(99):.2f}ms "
              f"cpu={cpu * 100:.1f}% pid={os.getpid()} ort={ort.__version__}\n")
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
