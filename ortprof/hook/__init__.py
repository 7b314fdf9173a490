"""The startup hook: environment for the workload, and reading its records back."""
import json
import os
import time
from pathlib import Path

INJECT_DIR = Path(__file__).with_name("inject")
ORT_PROFILE_STOP = "ort-profile.stop"    # the hook ends ORT's profilers when this file appears


def hook_environment(base_env, hook_dir, warmup_runs=5, overrides=None, extra_paths=(), ort_profile=False):
    """Environment for a workload with the hook injected (user code untouched)."""
    env = dict(base_env)
    paths = [str(INJECT_DIR), *map(str, extra_paths)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["ORTPROF_HOOK_DIR"] = str(hook_dir)
    env["ORTPROF_WARMUP_RUNS"] = str(warmup_runs)
    if overrides:
        env["ORTPROF_SESSION_OVERRIDES"] = json.dumps(overrides)
    else:
        env.pop("ORTPROF_SESSION_OVERRIDES", None)
    if ort_profile:
        env["ORTPROF_ORT_PROFILE"] = "1"
    else:
        env.pop("ORTPROF_ORT_PROFILE", None)
    return env


def end_ort_profiles(hook_dir, timeout=5.0):
    """Ask the hook to end every ORT profile (the window closed) and wait until each profiled
    session wrote its file, or `timeout`. Returns the session ids still open."""
    Path(hook_dir, ORT_PROFILE_STOP).touch()
    deadline = time.monotonic() + timeout
    while True:
        profiled, ended = set(), set()
        for record in read_hook_records(hook_dir):
            if record.get("event") == "session" and record.get("ort_profile"):
                profiled.add((record.get("pid"), record["session"]))
            elif record.get("event") == "ort_profile_end":
                ended.add((record.get("pid"), record.get("session")))
        open_sessions = profiled - ended
        if not open_sessions or time.monotonic() >= deadline:
            return sorted(open_sessions)
        time.sleep(0.05)


def read_hook_records(hook_dir):
    """Yield every record of every hook-<pid>.jsonl in `hook_dir`; a torn last line is skipped."""
    for path in sorted(Path(hook_dir).glob("hook-*.jsonl")):
        with open(path) as stream:
            for line in stream:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue  # the workload died mid-write


def warm_event(hook_dir):
    """The first `warm` record seen in `hook_dir`, or None."""
    for record in read_hook_records(hook_dir):
        if record.get("event") == "warm":
            return record
    return None
