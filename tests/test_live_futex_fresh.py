"""Futex tracepoints on a freshly booted machine: tracefs is not mounted.

As root, perf mounts tracefs by itself, so `record` must ask perf (its probe
recording) rather than look at /sys/kernel/tracing, and record futex events with
stacks. Without root nothing can mount it: `record` says so on stderr, with the
fix, and in run.json's "futex_probe"."""
import json
import os
import subprocess
import sys
import tempfile

import pytest

from live import DEMO, ORTPROF
from ortprof import environment as env
from nobody import SYSTEM_PYTHON, unprivileged_prefix

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(env.find_tool("perf") is None, reason="perf is not installed"),
              pytest.mark.skipif(os.geteuid() != 0, reason="unmounting tracefs needs root")]

TRACEFS = "/sys/kernel/tracing"
WARNING_PREFIX = "ortprof: warning: no futex events will be recorded: "


def tracefs_mounted():
    with open("/proc/self/mounts") as stream:
        return any(fields[1] == TRACEFS and fields[2] == "tracefs"
                   for fields in (line.split() for line in stream) if len(fields) > 2)


@pytest.fixture
def fresh_boot_tracefs():
    """tracefs unmounted, as after boot; the mount state is restored afterwards."""
    was_mounted = tracefs_mounted()
    if was_mounted:
        done = subprocess.run(["umount", TRACEFS], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot unmount {TRACEFS}: {done.stderr.strip()}")
    if os.path.isdir("/sys/kernel/debug/tracing/events"):
        pytest.skip("debugfs exposes tracing too: not a fresh machine's state")
    assert not tracefs_mounted()
    try:
        yield
    finally:
        if was_mounted and not tracefs_mounted():
            subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)
        elif not was_mounted and tracefs_mounted():
            subprocess.run(["umount", TRACEFS], check=False)


def futex_entries_with_stacks(perf_data):
    """sys_enter_futex events of `perf script` and how many carry user frames."""
    script = subprocess.run([env.find_tool("perf"), "script", "-F", "event,ip,sym", "-i", str(perf_data)],
                            capture_output=True, text=True, timeout=120)
    assert script.returncode == 0, script.stderr[-2000:]
    entries, with_stacks, frames, in_entry = 0, 0, 0, False
    for line in script.stdout.splitlines() + [""]:
        # A sample's first line is its event name ("name:"; perf pads it to the longest name), then frames.
        if not line.strip() or line.strip().endswith(":"):
            if in_entry:
                with_stacks += frames >= 2
            in_entry = "sys_enter_futex" in line
            entries += in_entry
            frames = 0
        elif in_entry:
            frames += 1
    return entries, with_stacks


def test_root_records_futex_events_with_stacks_although_tracefs_was_not_mounted(fresh_boot_tracefs, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([ORTPROF, "record", "-q", "--duration", "3", "-o", str(out), "--",
                             *DEMO, "--rate", "10", "--allow-spinning", "0"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert WARNING_PREFIX not in result.stderr
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["futex_probe"] == {"usable": True, "reason": None, "fix": None}
    assert tracefs_mounted(), "perf mounts tracefs itself when it needs it"
    entries, with_stacks = futex_entries_with_stacks(out / "perf.data")
    # spinning off: the pool's workers block on every request, ~1500 futex calls a second; perf keeps
    # the stack of one in 16 (bpftrace counts them all), ~100 entries a second
    assert entries >= 50, entries
    assert with_stacks >= entries // 2, (entries, with_stacks)


def test_unprivileged_record_warns_once_on_stderr_with_the_fix(fresh_boot_tracefs):
    prefix = unprivileged_prefix()
    out = tempfile.mkdtemp(prefix="ortprof-futex-")
    os.chmod(out, 0o777)
    run_dir = os.path.join(out, "run")
    result = subprocess.run([*prefix, SYSTEM_PYTHON, "-m", "ortprof", "record", "-q", "--profiler", "perf",
                             "--delay", "0.3", "--duration", "1", "-o", run_dir, "--",
                             SYSTEM_PYTHON, "-c", "import time; time.sleep(4)"],
                            capture_output=True, text=True, timeout=120, cwd="/tmp")
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith(WARNING_PREFIX)]
    assert len(warnings) == 1, result.stderr
    assert "tracefs is not mounted and perf may mount it only as root" in warnings[0]
    assert "; fix: run ortprof as root" in warnings[0]
    with open(os.path.join(run_dir, "run.json")) as stream:
        manifest = json.load(stream)
    probe = manifest["futex_probe"]
    assert probe["usable"] is False
    assert probe["reason"].startswith("tracefs is not mounted") and "mount -t tracefs" in probe["fix"]
    assert not any("sys_enter_futex" in arg for arg in manifest["profilers"]["perf"]["command"])
    assert not tracefs_mounted()


def test_doctor_in_a_fresh_process_agrees_with_record(fresh_boot_tracefs):
    done = subprocess.run([sys.executable, "-m", "ortprof", "doctor", "--json", "--quick",
                           "--check", "perf", "--check", "futex-tracepoints"],
                          capture_output=True, text=True, timeout=120)
    checks = {check["id"]: check for check in json.loads(done.stdout)["checks"]}
    assert checks["futex-tracepoints"]["status"] == "ok", checks["futex-tracepoints"]
    assert tracefs_mounted()
