"""The startup hook: environment for the workload, and reading its records back."""
import json
import os
from pathlib import Path

INJECT_DIR = Path(__file__).with_name("inject")


def hook_environment(base_env, hook_dir, warmup_runs=5, overrides=None, extra_paths=()):
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
    return env


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
