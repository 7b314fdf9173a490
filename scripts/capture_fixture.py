"""Record the captured run fixtures tests/fixtures/run-<name>/ (tests/test_finding_rules.py).

    .venv/bin/python scripts/capture_fixture.py                 # all of them
    .venv/bin/python scripts/capture_fixture.py neighbour pinned # some

Each run is a real `ortprof record` (perf, bpftrace, the hook, the onnxruntime
wheel of this venv) of scripts/finding_workload.py. What the analysis needs
without a subprocess is kept: run.json, hook/, threads.csv, futex-bpf.jsonl,
the workload's own measurements (requests.log), and perf.data as the
`perf script` text loading would decode (ortprof's own perf script command),
xz-compressed. The report is then built from the copy and its findings
compared with what the run is meant to show: a capture that does not show it
(on a busy machine, say) is reported and not kept, unless --keep.

`python -m ortprof` is the ortprof this interpreter imports: to record with a
committed version while the working tree changes, run it from a directory
without an ortprof/ in it with PYTHONPATH=<export of that commit>.
"""
import argparse
import json
import lzma
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
WORKLOAD = ROOT / "scripts" / "finding_workload.py"
RECORD = ["--duration", "4", "--frequency", "499"]
KEPT = ("run.json", "threads.csv", "futex-bpf.jsonl")
REQUESTS_LOG = "requests.log"   # the workload's own measurements (finding_workload.py --log)
PERF_SCRIPT = "perf-script.txt.xz"

PINNED = ["--threads", "2", "--caller-cpu", "0", "--worker-cpu", "1", "--rate", "50"]
# name: (workload arguments, {finding id: expected present?})
RUNS = {
    "nospin": (["--rate", "20", "--allow-spinning", "0"],
               {"futex-overhead": True, "stripped-binary": True, "python-overhead": False}),
    "spin": (["--rate", "20"], {"futex-overhead": False, "caller-spin": False, "python-overhead": False}),
    "neighbour": (PINNED + ["--neighbour-cpu", "1"], {"caller-spin": True}),
    "pinned": (PINNED, {"caller-spin": False}),
    "steady": (["--rate", "20", "--threads", "1"], {"latency-variance": False, "python-overhead": False}),
    "mixed-sizes": (["--rate", "20", "--threads", "1", "--sizes", "8,8,8,8,8,8,8,8,8,64"], {"latency-variance": True}),
    "preprocess": (["--rate", "20", "--preprocess-words", "40000"], {"python-overhead": True}),
}


def record(name, workload_args, scratch):
    out = scratch / name
    command = [sys.executable, "-m", "ortprof", "record", "-q", "-o", str(out), "-n", name, *RECORD,
               "--", sys.executable, str(WORKLOAD), "--log", str(scratch / f"{name}.{REQUESTS_LOG}"), *workload_args]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return out


def keep(recorded, requests_log, target):
    from ortprof.analysis.perfscript import perf_script_command
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in KEPT:
        if (recorded / name).exists():
            shutil.copy2(recorded / name, target / name)
    shutil.copytree(recorded / "hook", target / "hook")
    shutil.copy2(requests_log, target / REQUESTS_LOG)
    perf = shutil.which("perf")
    text = subprocess.run(perf_script_command(perf, recorded / "perf.data"), check=True, capture_output=True,
                          text=True, errors="replace").stdout
    with lzma.open(target / PERF_SCRIPT, "wt", preset=9) as stream:
        stream.write(text)


def findings_of(target):
    from ortprof.analysis.perfscript import parse_samples
    from ortprof.analysis.report import build_report
    from ortprof.recording.rundir import RunDirectory
    with lzma.open(target / PERF_SCRIPT, "rt") as stream:
        _, report = build_report(RunDirectory(target), samples=parse_samples(stream))
    return {finding["id"]: finding["evidence"] for finding in report.to_json()["findings"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"runs to capture (default: all): {', '.join(RUNS)}")
    parser.add_argument("--keep", action="store_true", help="keep a capture even if its findings are not as expected")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(RUNS)
    if unknown:
        parser.error(f"no such run: {', '.join(sorted(unknown))}")
    failed = []
    with tempfile.TemporaryDirectory(prefix="ortprof-capture-") as scratch:
        for name in args.names or RUNS:
            workload_args, expected = RUNS[name]
            recorded = record(name, workload_args, Path(scratch))
            staged = Path(scratch) / f"run-{name}"
            keep(recorded, Path(scratch) / f"{name}.{REQUESTS_LOG}", staged)
            found = findings_of(staged)
            wrong = {fid: want for fid, want in expected.items() if (fid in found) != want}
            print(f"run-{name}: findings {json.dumps(found)}")
            if wrong and not args.keep:
                failed.append(name)
                print(f"run-{name}: NOT kept, expected {wrong} (present?)", file=sys.stderr)
                continue
            target = FIXTURES / f"run-{name}"
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(staged, target)
            print(f"run-{name}: kept in {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
