"""The compiled BPF program (ortprof.bpf.c) and its loader (loader.c): futex counts and
scheduler events of the recorded process, the bpftrace program's logic (futex/bpf.py,
sched/bpf.py) without bpftrace's per-event output, written as the same lines.

`make setup` builds it (build.sh: clang against the running kernel's BTF, bpftool, libbpf)
into build/ next to this file (git-ignored); where it is missing or does not load, the
bpftrace program records the same evidence, at a higher cost (docs/benchmarks.md).
"""
import os
import subprocess
from pathlib import Path
from typing import Optional, Tuple

HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / "build"
BUILD_SCRIPT = HERE / "build.sh"
LOADER_NAME = "ortprof-bpf"
PROGRAM = "libbpf"                  # run.json's name for this producer (the other: "bpftrace")
LOADER_ENV = "ORTPROF_BPF_LOADER"   # a loader to use instead of the built one; "": none (bpftrace then)
BUILD_FIX = "make setup (installs clang, libbpf-dev, bpftool as root and builds it; or run " \
            "ortprof/signals/sched/compiled/build.sh)"


def loader_path() -> Tuple[Optional[str], Optional[str]]:
    """(the loader's path, None) when it is built, else (None, why not)."""
    chosen = os.environ.get(LOADER_ENV)
    if chosen is not None:
        if not chosen:
            return None, f"{LOADER_ENV} is empty"
        path = Path(chosen)
    else:
        path = BUILD_DIR / LOADER_NAME
    if not os.access(path, os.X_OK):
        return None, f"the compiled BPF program is not built ({path} missing)"
    return str(path), None


def loader_command(loader, output, recorder_pid, sched):
    """The loader's command line: futex counts, and the scheduler's events when `sched`."""
    return [loader, *(["-s"] if sched else []), "-o", str(output), str(recorder_pid)]


def build(directory=BUILD_DIR, timeout=300) -> Tuple[bool, str]:
    """Build the loader into `directory`: (built, build.sh's last words)."""
    try:
        result = subprocess.run(["bash", str(BUILD_SCRIPT), str(directory)], capture_output=True, text=True,
                                timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, str(error)
    words = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return result.returncode == 0, (words[-1] if words else f"exit code {result.returncode}")
