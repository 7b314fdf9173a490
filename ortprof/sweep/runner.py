"""One repeat of one cell: a fresh workload process with the cell's settings
injected, a warm-up, then a measurement window.

ORT reads its settings when a session is created, so every repeat is a new
process. The window opens once the hook reports the warm-up done and closes
after `duration` seconds; process CPU comes from the kernel's per-process
counters, latency from the hook's run() records that started inside it.
"""
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ..analysis.latency import percentile, session_latencies
from ..hook import hook_environment, read_hook_records, warm_event
from ..errors import InputError
from ..recording.workload import Workload
from ..sysfiles import thread_schedstats
from .matrix import Cell

POLL_SECONDS = 0.02
LOG_NAME = "workload.log"
HOOK_DIR = "hook"


@dataclass
class RunPlan:
    cell: Cell
    repeat: int
    argv: list
    directory: Path
    duration: float
    warmup_runs: int = 5
    warmup_timeout: float = 60.0
    base_env: dict = field(default_factory=lambda: dict(os.environ))

    @property
    def cpus(self):
        return self.cell.condition_map.get("cpus")


class RunFailed(Exception):
    """The workload did not give a measurement; the message says why."""


class NotInjectable(RunFailed):
    """The startup hook never loaded: no run of this command can be measured."""


def run_once(plan, tick=None):
    """Measure one repeat of a cell. Returns the run's record (status ok or failed).

    `tick()` is called a few times a second while the window is open.
    Interruptions (exceptions raised by signal handlers) stop the workload and propagate.
    """
    plan.directory.mkdir(parents=True, exist_ok=True)
    hook_dir = plan.directory / HOOK_DIR
    hook_dir.mkdir(exist_ok=True)
    record = {"cell": plan.cell.id, "repeat": plan.repeat, "directory": str(plan.directory),
              "status": "failed", "started_unix": round(time.time(), 3)}
    group = None
    launched = None
    try:
        if plan.cpus is not None:
            from ..cgroup import LimitedCgroup
            group = LimitedCgroup(plan.cpus, name=f"sweep-{plan.cell.id}").create()
        env = hook_environment(plan.base_env, hook_dir, plan.warmup_runs, plan.cell.overrides())
        launched_at = time.monotonic()
        try:
            launched = Workload(plan.argv, env, plan.directory / LOG_NAME, group.add_self if group else None,
                                tee=False)
        except InputError as error:
            raise RunFailed(str(error))
        record["pid"] = launched.process.pid
        pid = _await_warm(plan, launched, hook_dir)
        record["startup_s"] = round(time.monotonic() - launched_at, 3)
        record.update(_measure_window(plan, launched, pid, group, tick))
        record["exit_code"] = launched.stop()
        record["stopped_with"] = launched.stopped_with
        record.update(_latency_and_settings(plan, hook_dir, record))
        record["status"] = "ok"
    except RunFailed as failure:
        record["error"] = str(failure)
        record["fatal"] = isinstance(failure, NotInjectable)
    finally:
        if launched is not None and launched.exit_code() is None:
            record["exit_code"] = launched.stop()
        elif launched is not None:
            record.setdefault("exit_code", launched.exit_code())
        if group is not None:
            group.remove()
    record["finished_unix"] = round(time.time(), 3)
    return record


def _await_warm(plan, launched, hook_dir):
    deadline = time.monotonic() + plan.warmup_timeout
    while True:
        warm = warm_event(hook_dir)
        if warm is not None:
            return warm.get("pid") or launched.process.pid
        code = launched.exit_code()
        if code is not None:
            raise RunFailed(f"the workload exited with code {code} before the warm-up ended"
                            + (f": {launched.log_tail()}" if launched.log_tail() else ""))
        if time.monotonic() > deadline:
            if not any(r.get("event") == "hello" for r in read_hook_records(hook_dir)):
                raise NotInjectable(
                    f"ortprof's startup hook did not load in the workload within {plan.warmup_timeout:g} s: "
                    "sweep injects settings into Python programs that use onnxruntime")
            raise RunFailed(f"no {plan.warmup_runs} ORT run() calls within {plan.warmup_timeout:g} s "
                            "(not a Python ORT workload, or too slow a request rate for --warmup-runs)")
        time.sleep(POLL_SECONDS)


def _cpu_seconds(process):
    times = process.cpu_times()
    return times.user + times.system


def _thread_runtimes(pid):
    """{tid: CPU seconds} from the scheduler's nanosecond counters, or None."""
    stats = thread_schedstats(pid)
    return None if stats is None else {tid: values[0] / 1e9 for tid, values in stats.items()}


def _window_cpu(coarse, precise_start, precise_end):
    """Process CPU over the window. The process total counts in clock ticks (10 ms,
    a third of a point in a 3 s window); the per-thread scheduler counters are
    exact but forget threads that exit, so they are used only when they agree."""
    if not precise_start or not precise_end or set(precise_start) - set(precise_end):
        return coarse, "ticks"
    precise = sum(end - precise_start.get(tid, 0.0) for tid, end in precise_end.items())
    tick = 1 / os.sysconf("SC_CLK_TCK")
    return (precise, "scheduler") if abs(precise - coarse) <= 2 * tick else (coarse, "ticks")


def _machine_busy_seconds():
    times = psutil.cpu_times()
    # guest time is already inside user time; steal is the hypervisor's, not ours
    not_busy = ("idle", "iowait", "steal", "guest", "guest_nice")
    return sum(times) - sum(getattr(times, name, 0.0) for name in not_busy)


def _measure_window(plan, launched, pid, group, tick):
    try:
        process = psutil.Process(pid)
        start_cpu = _cpu_seconds(process)
        start_threads = _thread_runtimes(pid)
    except psutil.Error:
        raise RunFailed(f"the ORT process {pid} vanished at the end of the warm-up")
    start_stat = group.stat() if group else None
    start_busy = _machine_busy_seconds()
    start = time.monotonic()
    end = start + plan.duration
    while True:
        now = time.monotonic()
        if now >= end:
            break
        code = launched.exit_code()
        if code is not None or not process.is_running():
            raise RunFailed(f"the workload exited (code {code}) {now - start:.1f} s into the "
                            f"{plan.duration:g} s measurement window; it must run for the warm-up "
                            f"plus --duration")
        if tick:
            tick()
        time.sleep(min(0.05, end - now))
    try:
        end_threads = _thread_runtimes(pid)
        cpu, cpu_source = _window_cpu(_cpu_seconds(process) - start_cpu, start_threads, end_threads)
        threads = process.num_threads()
    except psutil.Error:
        raise RunFailed("the workload exited at the end of the measurement window")
    stop = time.monotonic()
    background = max(0.0, _machine_busy_seconds() - start_busy - cpu)
    result = {"measured_pid": pid, "window": [round(start, 4), round(stop, 4)],
              "window_s": round(stop - start, 4), "cpu_s": round(cpu, 4),
              "cpu_pct": round(100 * cpu / (stop - start), 3), "cpu_source": cpu_source,
              "threads_in_process": threads,
              # Everything else the machine ran meanwhile: a busy neighbour skews every figure.
              "background_cpu_pct": round(100 * background / (stop - start), 1)}
    if group:
        end_stat = group.stat()
        throttled_us = (end_stat["throttled_usec"] or 0) - (start_stat["throttled_usec"] or 0)
        result["throttled_ms_per_s"] = round(throttled_us / 1000 / (stop - start), 3)
        result["nr_throttled"] = (end_stat["nr_throttled"] or 0) - (start_stat["nr_throttled"] or 0)
    return result


def _latency_and_settings(plan, hook_dir, measured):
    records = list(read_hook_records(hook_dir))
    window = tuple(measured["window"])
    sessions = [s for s in session_latencies(records, window) if s.durations_ms]
    if not sessions:
        raise RunFailed("no ORT run() started inside the measurement window")
    # The busiest session is the service; others (a warm-up model, a tokenizer) are context.
    main = max(sessions, key=lambda s: len(s.durations_ms))
    ordered = sorted(main.durations_ms)
    count = len(ordered)
    result = {
        "inferences": count, "sessions": len(sessions),
        "p50_ms": round(percentile(ordered, 50), 4), "p95_ms": round(percentile(ordered, 95), 4),
        "p99_ms": round(percentile(ordered, 99), 4),
        "throughput": round(count / measured["window_s"], 3),
        "cpu_ms_per_inference": round(1000 * measured["cpu_s"] / count, 4),
        "ort_version": main.ort_version, "effective": main.options,
        "ort_file": next((r.get("ort_file") for r in records if r.get("event") == "session"), None),
    }
    mismatches = settings_mismatches(plan.cell.settings(), main.options)
    if mismatches:
        raise RunFailed("the settings did not reach ORT (asked vs what the session reports): "
                        + "; ".join(mismatches))
    return result


def settings_mismatches(asked, effective):
    """['intra_op_num_threads: asked 1, ORT has 0', ...] from the hook's read-back."""
    config = (effective or {}).get("config") or {}
    problems = []
    for key, value in asked.items():
        if key.startswith("session."):
            have = config.get(key)
            if have != str(value):
                problems.append(f"{key}: asked {value}, ORT has {have}")
        elif key == "execution_mode":
            have = str((effective or {}).get("execution_mode", ""))
            if not have.lower().endswith(value):
                problems.append(f"execution_mode: asked {value}, ORT has {have or None}")
        else:
            have = (effective or {}).get(key)
            if have != value:
                problems.append(f"{key}: asked {value}, ORT has {have}")
    return problems
