#!/usr/bin/env python3
"""Speed and memory of `ortprof report` against `perf report --stdio`, on the same recordings.

Recordings (made here with `ortprof record`):
  small  the demo at 10 requests/s, ortprof's defaults, 10 s
  large  the demo in a closed loop at 4000 Hz for ~30 s: >= 200k samples
For each, times `perf report --stdio` (the seed workflow) and `ortprof report --json`
(cold symbol cache and warm), and the peak RSS of the largest process of each
(ortprof's own Python or the `perf script` it streams from). Prints ratios.

    python scripts/bench_report.py [--keep DIR] [--large-seconds 30] [--skip-large]
                                   [--baseline REV] [--formats]

--baseline REV also times `ortprof report --json` of git revision REV (checked out
into a temporary worktree, run with this venv's Python) on the same recordings, in
alternating rounds: the cost of a change to the analysis, as a ratio.
--formats also times writing every export format in one report run
(--format json + html + speedscope + pprof + folded) against --json alone.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import baseline

PYTHON = sys.executable
ORTPROF = str(Path(PYTHON).parent / "ortprof")

MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def measure(argv, env=None):
    """(seconds, peak RSS MiB of the largest descendant) of one run of argv."""
    out = subprocess.run([PYTHON, "-c", MEASURE, *argv], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout.split()
    seconds, rss_kib, code = float(out[0]), int(out[1]), int(out[2])
    if code not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} exited {code}")
    return seconds, rss_kib / 1024


def record(out, seconds, *extra, demo_args=("--rate", "10")):
    subprocess.run([ORTPROF, "record", "-q", "--duration", str(seconds), "-o", str(out), *extra, "--",
                    PYTHON, "-m", "ortprof.demo", *demo_args], check=True,
                   stdout=subprocess.DEVNULL)


def samples_in(run):
    out = subprocess.run(["perf", "report", "-i", str(run / "perf.data"), "--stats"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "SAMPLE events" in line:
            return int(line.split(":")[1].split()[0])
    return 0


def compare(name, run):
    perf_s, perf_mb = measure(["perf", "report", "--stdio", "-i", str(run / "perf.data")])
    with tempfile.TemporaryDirectory() as cache:
        cold_s, cold_mb = measure([ORTPROF, "report", str(run), "--json"], env={"ORTPROF_CACHE_DIR": cache})
        warm_s, warm_mb = measure([ORTPROF, "report", str(run), "--json"], env={"ORTPROF_CACHE_DIR": cache})
    size = (run / "perf.data").stat().st_size / 1e6
    print(f"{name:6s} {samples_in(run):>8d} {size:8.0f} | {perf_s:8.2f} {perf_mb:7.0f} | "
          f"{cold_s:8.2f} {warm_s:8.2f} {max(cold_mb, warm_mb):7.0f} | {perf_s / warm_s:6.2f}x {perf_s / cold_s:6.2f}x", flush=True)


def ortprof_at(revision, root):
    """argv prefix running `ortprof` as of git `revision` (a worktree under `root`)."""
    return ["env", f"PYTHONPATH={baseline.checkout(revision, root)}", PYTHON, "-m", "ortprof"]


def compare_with_baseline(name, run, baseline_argv, rounds=3):
    """Median seconds of `report --json` now vs at the baseline revision, alternating rounds."""
    import statistics
    now, then = [], []
    for _ in range(rounds):
        then.append(measure([*baseline_argv, "report", str(run), "--json"])[0])
        now.append(measure([ORTPROF, "report", str(run), "--json"])[0])
    print(f"{name:6s} baseline {statistics.median(then):7.2f} s   now {statistics.median(now):7.2f} s   "
          f"now/baseline {statistics.median(now) / statistics.median(then):5.2f}x  ({rounds} alternating rounds)",
          flush=True)


def compare_formats(name, run, out, rounds=3):
    import statistics
    every = ["--format", f"json={out / 'r.json'}", "--format", f"html={out / 'r.html'}",
             "--format", f"speedscope={out / 'r.speedscope.json'}", "--format", f"pprof={out / 'r.pb.gz'}",
             "--format", f"folded={out / 'r.folded'}", "--format", "terminal"]
    alone, all_formats = [], []
    for _ in range(rounds):
        alone.append(measure([ORTPROF, "report", str(run), "--json"])[0])
        all_formats.append(measure([ORTPROF, "report", str(run), *every])[0])
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(out.glob("r.*")))
    print(f"{name:6s} --json {statistics.median(alone):7.2f} s   every format {statistics.median(all_formats):7.2f} s   "
          f"ratio {statistics.median(all_formats) / statistics.median(alone):5.2f}x   ({sizes})", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", help="keep recordings in this directory (reused when present)")
    parser.add_argument("--large-seconds", type=float, default=30)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--baseline", metavar="REV", help="also time `report --json` at this git revision")
    parser.add_argument("--formats", action="store_true", help="also time writing every export format")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ortprof-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        small, large = root / "small", root / "large"
        if not (small / "run.json").exists():
            record(small, 10)
        runs = [("small", small)]
        if not args.skip_large:
            if not (large / "run.json").exists():
                record(large, args.large_seconds, "-F", "4000", "--stack-size", "4096", "--no-futex",
                       demo_args=("--rate", "0"))
            runs.append(("large", large))
        print(f"{'run':6s} {'samples':>8s} {'MB':>8s} | {'perf s':>8s} {'MiB':>7s} | "
              f"{'cold s':>8s} {'warm s':>8s} {'MiB':>7s} | {'speed-up warm/cold':>14s}")
        for name, run in runs:
            compare(name, run)
        print("\nperf = `perf report --stdio`; ortprof = `ortprof report --json` with an empty (cold) and a "
              "filled (warm) symbol cache; MiB = peak RSS of the largest process; speed-up = perf s / ortprof s")
        if args.baseline:
            baseline_argv = ortprof_at(args.baseline, root)
            print(f"\n`ortprof report --json`: this tree vs {args.baseline}")
            for name, run in runs:
                compare_with_baseline(name, run, baseline_argv)
        if args.formats:
            print("\nwriting every export format vs --json alone")
            for name, run in runs:
                out = root / f"formats-{name}"
                out.mkdir(exist_ok=True)
                compare_formats(name, run, out)
    finally:
        if args.baseline:
            baseline.prune()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
