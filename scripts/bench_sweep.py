#!/usr/bin/env python3
"""Benchmark `ortprof sweep`: a full default sweep of the demo at 10 requests/s.

Targets on 2 cores: the whole sweep (checks, every run, output) done in
<= 120 s, and a 95% confidence half-width of at most 1 point of CPU% for every
configuration. Also prints what other processes used meanwhile, since a busy
neighbour skews every figure of a sweep.

    .venv/bin/python scripts/bench_sweep.py [--times N] [-- extra sweep options]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 120.0
TARGET_HALF_WIDTH = 1.0


def one_sweep(extra):
    from ortprof.demo.model import demo_model_path
    ortprof = Path(sys.executable).with_name("ortprof")
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        argv = [str(ortprof), "sweep", "--model", str(demo_model_path("small")), "--shape", "sequence=10",
                "--rate", "10", "--json", "-q", "-o", str(Path(tmp) / "sweep"), *extra]
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True)
        seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"sweep failed ({done.returncode}): {done.stderr.strip()}")
    return seconds, json.loads(done.stdout)


def report(seconds, document):
    options = document["options"]
    print(f"sweep: {len(document['cells'])} configurations, {len(document['runs'])} runs of "
          f"{options['duration']:g} s (--repeat {options['repeat']}, --ci-target {options['ci_target']:g}, "
          f"--max-repeat {options['max_repeat']}), {document['environment']['usable_cores']} cores")
    worst = 0.0
    for cell in document["cells"]:
        interval = cell["ci95"]["cpu_pct"]
        half = (interval[1] - interval[0]) / 2 if interval else float("inf")
        worst = max(worst, half)
        print(f"  {cell['label'] + (' (defaults)' if cell['is_defaults'] else ''):34s} n={cell['repeats']:2d} "
              f"CPU {cell['cpu_pct']:6.2f}% +-{half:4.2f}   p50 {cell['p50_ms']:6.2f} ms   "
              f"p95 {cell['p95_ms']:6.2f} ms +-{_half(cell, 'p95_ms'):5.2f}   "
              f"other processes {cell.get('background_cpu_pct') or 0:5.1f}% of a core")
    recommendation = document.get("recommendation") or {}
    print(f"  recommendation: {recommendation.get('label') or recommendation.get('reason')}")
    time_ok, width_ok = seconds <= TARGET_SECONDS, worst <= TARGET_HALF_WIDTH
    print(f"wall time {seconds:.1f} s (target <= {TARGET_SECONDS:g}): {'ok' if time_ok else 'MISSED'}")
    print(f"worst CPU% half-width {worst:.2f} points (target <= {TARGET_HALF_WIDTH:g}): "
          f"{'ok' if width_ok else 'MISSED'}")
    return time_ok and width_ok


def _half(cell, figure):
    interval = cell["ci95"][figure]
    return (interval[1] - interval[0]) / 2 if interval else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--times", type=int, default=1, help="run the benchmark this many times")
    parser.add_argument("extra", nargs="*", help="extra `ortprof sweep` options (after --)")
    args = parser.parse_args()
    passed = 0
    for index in range(args.times):
        if args.times > 1:
            print(f"--- sweep {index + 1}/{args.times}")
        seconds, document = one_sweep(args.extra)
        passed += report(seconds, document)
    if args.times > 1:
        print(f"targets met in {passed}/{args.times} sweeps")
    return 0 if passed == args.times else 1


if __name__ == "__main__":
    sys.exit(main())
