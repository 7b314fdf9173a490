#!/usr/bin/env python3
"""Overhead of `ortprof record` on the workload, side by side with the seed workflow.

Runs the demo at 20 requests/s (default options) in alternating rounds:
  plain          the demo alone
  ortprof        under `ortprof record` with its defaults (futex calls counted in BPF when usable)
  ortprof-perf-futex  under `ortprof record --futex-method perf` (every futex call a perf event with a stack)
  perf-default   under the seed's `perf record --call-graph dwarf -p PID` (perf's default 4000 Hz)
and prints, per mode, p50/p95 latency and process CPU as the demo measures them
(getrusage after its session is created), as ratios / differences to plain.
Then one more `ortprof record` run with `perf stat -I 100 -e syscalls:sys_enter_futex`
attached to the demo: ortprof's futex count next to perf's, over ortprof's window.
Then it times the startup hook's cost per run() on a tiny model.

    python scripts/bench_record.py [--rounds 3] [--seconds 12]
    python scripts/bench_record.py --modes plain,ortprof --demo-args '--allow-spinning 0'
    python scripts/bench_record.py --modes plain,ortprof --variant no-futex='--no-futex'
(--variant NAME='OPTIONS' adds a mode "NAME": `ortprof record OPTIONS`, to see
what one part of the recording costs next to the defaults in the same rounds; leading
VAR=VALUE words set the environment, e.g. bpftrace instead of the compiled BPF program:
    --variant sched-bpftrace='ORTPROF_BPF_LOADER= --sched')
"""
import argparse
import json
import os
import signal
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import baseline

PYTHON = sys.executable
ORTPROF = str(Path(PYTHON).parent / "ortprof")
DEMO_LINE = re.compile(r"p50=([0-9.]+)ms p95=([0-9.]+)ms cpu=([0-9.]+)%")


DEMO_ARGS = []   # --demo-args: e.g. '--allow-spinning 0'


def demo_argv(seconds, rate):
    return [PYTHON, "-m", "ortprof.demo", "--rate", str(rate), "--duration", str(seconds), *DEMO_ARGS]


def parse_demo(output):
    match = DEMO_LINE.search(output)
    if not match:
        raise SystemExit(f"demo output not understood:\n{output[-2000:]}")
    return tuple(float(x) for x in match.groups())


def run_plain(seconds, rate, workdir):
    return parse_demo(subprocess.run(demo_argv(seconds, rate), capture_output=True, text=True, check=True).stdout)


RECORD_ARGS = []   # --record-args: options to try against ortprof's defaults


def record_argv(demo, out, extra=(), record_args=RECORD_ARGS):
    """`ortprof record` of the `demo` command line; the demo's own --duration ends it."""
    return [ORTPROF, "record", "-q", "--duration", "600", "-o", str(out), *record_args, *extra, "--", *demo]


def run_ortprof(seconds, rate, workdir, extra=(), record_args=RECORD_ARGS, env=None):
    out = Path(workdir) / f"run-{time.monotonic_ns()}"
    result = subprocess.run(record_argv(demo_argv(seconds, rate), out, extra, record_args), capture_output=True,
                            text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return parse_demo((out / "workload.log").read_text())


BASELINE_ENV = {}   # --baseline REV: PYTHONPATH of that revision's worktree


def run_ortprof_baseline(seconds, rate, workdir):
    """`ortprof record` defaults as of --baseline REV (same demo, same venv; no --record-args)."""
    return run_ortprof(seconds, rate, workdir, record_args=(), env={**os.environ, **BASELINE_ENV})


def run_ortprof_perf_futex(seconds, rate, workdir):
    return run_ortprof(seconds, rate, workdir, ("--futex-method", "perf"))


def run_perf_default(seconds, rate, workdir):
    demo = subprocess.Popen(demo_argv(seconds, rate), stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)   # model load, as a user would wait before attaching
    perf = subprocess.Popen(["perf", "record", "-q", "--call-graph", "dwarf", "-o",
                             str(Path(workdir) / f"perf-{demo.pid}.data"), "-p", str(demo.pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    output, _ = demo.communicate()
    perf.wait()
    return parse_demo(output)


MODES = {"plain": run_plain, "ortprof": run_ortprof, "ortprof-perf-futex": run_ortprof_perf_futex,
         "ortprof-baseline": run_ortprof_baseline,
         "perf-default": run_perf_default}


def _attached(process):
    """Wait until perf has its events open (its counting starts then)."""
    fd_dir = f"/proc/{process.pid}/fd"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if any(os.readlink(os.path.join(fd_dir, fd)) == "anon_inode:[perf_event]" for fd in os.listdir(fd_dir)):
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.005)
    raise SystemExit("perf stat did not attach")


def futex_count_check(demo, out, extra=()):
    """(the report's futex section, perf stat's futex count over the same window, run.json)
    of `ortprof record` of the `demo` command line into `out`.

    perf stat counts every sys_enter_futex of the demo in 100 ms intervals from
    when it attached (a CLOCK_MONOTONIC time taken here, as ortprof's window is);
    intervals cut by the window's edges count in proportion."""
    out = Path(out)
    record = subprocess.Popen(record_argv(demo, out, extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    pid = None
    while pid is None and record.poll() is None:
        try:
            pid = json.loads((out / "run.json").read_text()).get("pid")
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    stat_out = out.parent / f"{out.name}.perf-stat.csv"
    stat = subprocess.Popen(["perf", "stat", "-I", "100", "-x", ",", "-e", "syscalls:sys_enter_futex",
                             "-p", str(pid), "-o", str(stat_out)], stderr=subprocess.DEVNULL)
    stat_zero = _attached(stat)
    _, errors = record.communicate()
    if record.returncode != 0:
        raise SystemExit(errors[-2000:])
    stat.send_signal(signal.SIGINT)
    stat.wait()
    manifest = json.loads((out / "run.json").read_text())
    window = manifest["window"]
    start, end = window["start_mono"] - stat_zero, window["end_mono"] - stat_zero
    independent, previous = 0.0, 0.0
    for line in stat_out.read_text().splitlines():
        fields = line.split(",")
        if len(fields) < 4 or not fields[1].strip().isdigit():
            continue
        stamp, count = float(fields[0]), int(fields[1])
        overlap = max(0.0, min(stamp, end) - max(previous, start))
        independent += count * overlap / (stamp - previous)
        previous = stamp
    report = subprocess.run([ORTPROF, "report", str(out), "--json"], capture_output=True, text=True)
    if report.returncode not in (0, 1):
        raise SystemExit(report.stderr[-2000:])
    return json.loads(report.stdout)["futex"], round(independent), manifest


def hook_cost_per_run(calls=20000):
    """µs per run() added by the startup hook, on a one-Add model (worst case: tiny runs)."""
    code = f"""
import time, numpy as np, onnxruntime as ort
from onnx import helper, TensorProto
g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 8
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
feed = {{"x": np.ones(1, np.float32)}}
for _ in range(2000): s.run(None, feed)
best = 1e9
for _ in range(5):
    t = time.perf_counter()
    for _ in range({calls}): s.run(None, feed)
    best = min(best, (time.perf_counter() - t) / {calls})
print(best * 1e6)
"""
    from ortprof.hook import hook_environment
    with tempfile.TemporaryDirectory() as hook_dir:
        hooked = hook_environment(os.environ, hook_dir)
        plain = float(subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout)
        with_hook = float(subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True,
                                         env=hooked).stdout)
    return plain, with_hook


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--modes", default=",".join(m for m in MODES if m != "ortprof-baseline"),
                        help="comma-separated subset of " + ", ".join(MODES))
    parser.add_argument("--record-args", default="", help="extra `ortprof record` options, e.g. '-F 99'")
    parser.add_argument("--demo-args", default="", help="extra demo options, e.g. '--allow-spinning 0'")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OPTIONS",
                        help="one more mode NAME: `ortprof record OPTIONS` (repeatable), e.g. no-futex='--no-futex'")
    parser.add_argument("--no-hook-cost", action="store_true")
    parser.add_argument("--no-futex-check", action="store_true",
                        help="skip the run that compares ortprof's futex count with perf stat's")
    parser.add_argument("--baseline", metavar="REV",
                        help="git revision whose `ortprof record` the ortprof-baseline mode runs (default mode list "
                             "gains it)")
    args = parser.parse_args()
    if args.baseline:
        import atexit
        import shutil
        root = Path(tempfile.mkdtemp(prefix="ortprof-baseline-"))
        atexit.register(baseline.prune)
        atexit.register(shutil.rmtree, root, True)
        BASELINE_ENV["PYTHONPATH"] = str(baseline.checkout(args.baseline, root))
        if "ortprof-baseline" not in args.modes:
            args.modes += ",ortprof-baseline"
    RECORD_ARGS.extend(args.record_args.split())
    DEMO_ARGS.extend(args.demo_args.split())
    modes = {mode: MODES[mode] for mode in args.modes.split(",")}
    for variant in args.variant:
        name, _, options = variant.partition("=")
        if not name or name in modes:
            parser.error(f"--variant {variant!r}: give NAME=OPTIONS with a NAME not already a mode")
        words = options.split()
        environment = dict(word.split("=", 1) for word in words if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", word))
        extra = tuple(word for word in words if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", word))
        modes[name] = lambda seconds, rate, workdir, extra=extra, environment=environment: \
            run_ortprof(seconds, rate, workdir, extra, env={**os.environ, **environment} if environment else None)
    results = {mode: [] for mode in modes}
    width = max(14, *(len(mode) for mode in modes))
    with tempfile.TemporaryDirectory() as workdir:
        for round_number in range(args.rounds):
            order = list(modes) if round_number % 2 == 0 else list(reversed(modes))
            for mode in order:
                results[mode].append(modes[mode](args.seconds, args.rate, workdir))
                print(f"round {round_number + 1} {mode:{width}s} p50={results[mode][-1][0]:.2f}ms "
                      f"p95={results[mode][-1][1]:.2f}ms cpu={results[mode][-1][2]:.1f}%", flush=True)
    base_p50 = statistics.median(r[0] for r in results["plain"])
    base_p95 = statistics.median(r[1] for r in results["plain"])
    base_cpu = statistics.median(r[2] for r in results["plain"])
    print(f"\ndemo at {args.rate:g} req/s, {args.rounds} rounds x {args.seconds:g} s, medians"
          + (f"; ortprof record {args.record_args}" if args.record_args else "")
          + (f"; demo {args.demo_args}" if args.demo_args else ""))
    print(f"{'mode':{width}s} {'p50 ms':>8s} {'p50 x':>7s} {'p95 ms':>8s} {'p95 x':>7s} {'CPU %':>7s} {'CPU +pts':>9s}")
    for mode, rows in results.items():
        p50 = statistics.median(r[0] for r in rows)
        p95 = statistics.median(r[1] for r in rows)
        cpu = statistics.median(r[2] for r in rows)
        print(f"{mode:{width}s} {p50:8.2f} {p50 / base_p50:7.3f} {p95:8.2f} {p95 / base_p95:7.3f} {cpu:7.1f} {cpu - base_cpu:+9.1f}")
    # The machine's speed drifts between rounds (plain's own CPU moves by points):
    # each mode against plain in the same round cancels most of that drift.
    print(f"\nagainst plain in the same round: median [lowest, highest] of {args.rounds} rounds")
    print(f"{'mode':{width}s} {'p50 x':>22s} {'p95 x':>22s} {'CPU +pts':>22s}")
    for mode, rows in results.items():
        if mode == "plain":
            continue
        pairs = list(zip(rows, results["plain"]))
        columns = [[ours[0] / plain[0] for ours, plain in pairs], [ours[1] / plain[1] for ours, plain in pairs],
                   [ours[2] - plain[2] for ours, plain in pairs]]
        cells = [f"{statistics.median(c):.3f} [{min(c):.3f}, {max(c):.3f}]" for c in columns[:2]]
        cells.append(f"{statistics.median(columns[2]):+.1f} [{min(columns[2]):+.1f}, {max(columns[2]):+.1f}]")
        print(f"{mode:{width}s} " + " ".join(f"{cell:>22s}" for cell in cells))
    if not args.no_futex_check:
        with tempfile.TemporaryDirectory() as workdir:
            futex, theirs, manifest = futex_count_check(demo_argv(args.seconds, args.rate), Path(workdir) / "run")
        ours = futex["calls"]
        print(f"\nfutex calls in ortprof's {manifest['window']['seconds']:g} s window: ortprof ({futex['method']}) "
              f"{ours}, perf stat -e syscalls:sys_enter_futex {theirs} ({100 * (ours - theirs) / max(theirs, 1):+.1f}%)")
    if args.no_hook_cost:
        return
    plain, hooked = hook_cost_per_run()
    print(f"\nstartup hook: run() of a one-Add model {plain:.2f} us plain, {hooked:.2f} us hooked "
          f"(+{hooked - plain:.2f} us per call)")


if __name__ == "__main__":
    main()
