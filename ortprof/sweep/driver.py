"""Runs a whole sweep: checks, then rounds of repeats (every cell once per round,
in a shuffled order, so drift and neighbours spread over all cells alike and an
interrupted sweep still has every cell of the finished rounds), saving
sweep.json after each run. Ctrl+C or SIGTERM ends the run in progress and
keeps everything finished before it.

After the --repeat rounds, cells whose CPU% interval is still wider than
--ci-target get more rounds (up to --max-repeat, while the sweep stays within
--time-budget): spinning configurations are far noisier than the others, so
the extra time goes where the doubt is.
"""
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .. import __version__
from ..errors import InputError, OrtprofError, WorkloadError
from ..recording.workload import resolve_executable
from ..stopping import Interrupted, stop_signals_raise_interrupted
from . import matrix, ortprobe, results, stats
from .runner import RunPlan, run_once

LOOP_SCRIPT = Path(__file__).with_name("loop.py")
STARTUP_GUESS_S = 2.0        # until the first run has measured it


@dataclass
class SweepOptions:
    command: list = field(default_factory=list)
    model: Optional[str] = None
    python: Optional[str] = None
    shapes: list = field(default_factory=list)
    axes: dict = field(default_factory=dict)      # axis name -> text from the command line
    duration: float = 3.0
    repeat: int = 3
    ci_target: float = 1.0                        # CPU% points; 0 = exactly --repeat runs
    max_repeat: int = 30
    time_budget: float = 110.0                    # seconds; extra runs only start within it
    warmup_runs: int = 5
    warmup_timeout: float = 60.0
    seed: Optional[int] = None
    budget: object = None                         # recommend.Budget
    name: Optional[str] = None
    output: Optional[str] = None
    progress: bool = True


def failure_of(document):
    """WorkloadError when a finished sweep has no successful run at all, else None."""
    runs = document.get("runs") or []
    if document.get("status") != "completed" or any(run.get("status") == "ok" for run in runs):
        return None
    first = next((run.get("error") for run in runs if run.get("error")), "no run succeeded")
    return WorkloadError(f"every run failed (first: {first}); logs are in {document.get('directory')}")


class Sweep:
    def __init__(self, options, console=None):
        self.options = options
        self.console = console
        self.notes = []
        self.runs = []
        self.install = None
        self.ort_verified = False
        self.directory = None

    # -- preparation -------------------------------------------------------
    def prepare(self):
        """Everything that can be refused is refused here, before any cell runs."""
        options = self.options
        if options.duration <= 0:
            raise InputError("--duration must be positive")
        if options.repeat < 1:
            raise InputError("--repeat must be 1 or more")
        if options.ci_target < 0:
            raise InputError("--ci-target must be 0 (off) or more")
        options.max_repeat = max(options.max_repeat, options.repeat)
        if options.time_budget < 0:
            raise InputError("--time-budget must be 0 or more")
        if options.warmup_runs < 1:
            raise InputError("--warmup-runs must be 1 or more")
        builtin = options.model is not None
        if builtin and options.command:
            raise InputError("give either --model MODEL.onnx or a command after --, not both")
        if not builtin and not options.command:
            raise InputError("give a command after -- (ortprof sweep -- python app.py) or --model MODEL.onnx")
        if not builtin and (options.shapes or options.python):
            raise InputError("--shape and --python apply to the built-in loop (--model)")
        self.axes = matrix.build_axes(options.axes, builtin)
        self.cells = matrix.build_cells(self.axes)
        self.reference_ids = {cell.id for cell in self.cells if matrix.is_reference(cell, self.axes)}
        if builtin:
            self._prepare_builtin()
        else:
            self._prepare_command()
        quotas = [cpus for cpus in self.axes.get("cpus", []) if cpus is not None]
        if quotas:
            from ..cgroup import LimitedCgroup
            with LimitedCgroup(min(quotas), "probe"):
                pass      # refuses here, with the fix, where CPU-limited groups cannot be made
        if options.seed is None:
            options.seed = random.SystemRandom().randrange(1, 1 << 31)

    def _check_ort(self, where):
        if self.install is not None:
            self.notes += matrix.check_ort_knows(self.axes, self.install, where)
            self.ort_verified = True

    def _prepare_builtin(self):
        options = self.options
        self.python = options.python or sys.executable
        model = Path(options.model)
        if not model.is_file():
            raise InputError(f"{model}: no such model file")
        self.model = str(model.resolve())
        self.install = ortprobe.locate_for_python(self.python)
        if self.install is None:
            raise InputError(f"{self.python} cannot import onnxruntime (or does not run)")
        self._check_ort(f"loaded by {self.python}")
        shape_args = [arg for spec in options.shapes for arg in ("--shape", spec)]
        check = subprocess.run([self.python, str(LOOP_SCRIPT), "--model", self.model, "--check", *shape_args],
                               capture_output=True, text=True)
        if check.returncode != 0:
            lines = [line for line in check.stderr.splitlines() if line.strip()]
            message = lines[-1] if lines else f"exit code {check.returncode}"
            raise InputError(message.removeprefix("loop: "))
        try:
            self.loop_inputs = json.loads(check.stdout)["inputs"]
        except (ValueError, KeyError):
            self.loop_inputs = None
        self.shape_args = shape_args

    def _prepare_command(self):
        executable = resolve_executable(self.options.command)
        self.python = ortprobe.python_of_command(executable)
        self.install = ortprobe.locate_for_python(self.python) if self.python else None
        self._check_ort("loaded by the workload")
        if self.install is None:
            self.notes.append("could not tell which ORT the command loads before running it; "
                              "its session options are checked after the first run")

    def argv_for(self, cell):
        if self.options.model is None:
            return list(self.options.command)
        rate = cell.condition_map.get("rate", 10.0)
        return [self.python, str(LOOP_SCRIPT), "--model", self.model, "--rate", f"{rate:g}", *self.shape_args]

    # -- the sweep ---------------------------------------------------------
    def meta(self):
        options = self.options
        return {
            "ortprof_version": __version__, "name": self.name,
            "directory": str(self.directory),
            "started_at": self.started_at,
            "workload": ({"kind": "model", "model": self.model, "python": self.python,
                          "shapes": options.shapes, "inputs": self.loop_inputs}
                         if options.model else {"kind": "command", "command": options.command}),
            "axes": self.axes,
            "options": {"duration": options.duration, "repeat": options.repeat,
                        "ci_target": options.ci_target, "max_repeat": options.max_repeat,
                        "time_budget": options.time_budget,
                        "warmup_runs": options.warmup_runs, "warmup_timeout": options.warmup_timeout,
                        "seed": options.seed},
            "environment": {"usable_cores": matrix.usable_cores(),
                            "ort": self.install.describe() if self.install else None},
            "defaults_cells": sorted(self.reference_ids),
            "notes": self.notes,
        }

    def document(self, status):
        return results.build_document(self.meta(), self.cells, self.reference_ids, self.runs,
                                      self.options.budget, status)

    def save(self, status):
        document = self.document(status)
        results.save(self.directory, document)
        return document

    def run(self):
        """Run every round; the final document (status completed or interrupted)."""
        options = self.options
        self.name = options.name or self._run_name()
        self.directory = results.create_directory(self.name, options.output)
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.save("running")
        status = "completed"
        rng = random.Random(options.seed)
        self.started = time.monotonic()
        try:
            with stop_signals_raise_interrupted(), self._progress(self._runs_expected()) as progress:
                for repeat, cell in self._schedule(rng):
                    progress.start_run(cell)
                    record = run_once(self._plan(cell, repeat), progress.tick)
                    self.runs.append(record)
                    if record.get("fatal"):
                        raise WorkloadError(record["error"])
                    self._verify_ort_late(record)
                    progress.end_run(record, self._runs_expected())
                    self.save("running")
        except Interrupted:
            status = "interrupted"
        except InputError:
            self.save("refused")
            raise
        except OrtprofError:
            self.save("failed")
            raise
        return self.save(status)

    def _cpu_samples(self, cell):
        return [run["cpu_pct"] for run in self.runs if run["cell"] == cell.id and run.get("status") == "ok"]

    def _schedule(self, rng):
        """(repeat, cell) in run order: --repeat shuffled rounds of every cell, then
        shuffled rounds of the cells still too uncertain, while time is left."""
        options = self.options
        for repeat in range(options.max_repeat):
            if repeat < options.repeat:
                cells = list(self.cells)
            elif options.repeat >= 2 and options.ci_target:
                cells = [cell for cell in self.cells if self._wants_more(cell)]
            else:
                cells = []
            if not cells:
                return
            rng.shuffle(cells)
            for cell in cells:
                if repeat >= options.repeat and not self._time_for_one_more():
                    self.notes.append(f"--time-budget {options.time_budget:g} s reached: no more runs for "
                                      f"--ci-target {options.ci_target:g}")
                    return
                yield repeat, cell

    def _seconds_per_run(self):
        return (time.monotonic() - self.started) / len(self.runs) if self.runs else \
            STARTUP_GUESS_S + self.options.duration

    def _time_for_one_more(self):
        return time.monotonic() - self.started + self._seconds_per_run() <= self.options.time_budget

    def _wants_more(self, cell):
        samples = self._cpu_samples(cell)
        if len(samples) < 2:
            return False      # failing cells get no extra rounds
        current = stats.estimate(samples)
        return current.half_width > self.options.ci_target

    def _runs_expected(self):
        """Runs of the whole sweep as far as can be told now (for the ETA)."""
        options = self.options
        base = len(self.cells) * options.repeat
        extra = 0
        for cell in self.cells:
            done = sum(1 for run in self.runs if run["cell"] == cell.id)
            samples = self._cpu_samples(cell)
            if options.repeat >= 2 and options.ci_target and done >= options.repeat and len(samples) >= 2:
                wanted = stats.repeats_needed(samples, options.ci_target, options.max_repeat) + done - len(samples)
                extra += max(wanted, done) - options.repeat
        if self.runs and extra:
            extra_done = max(0, len(self.runs) - base)
            left = options.time_budget - (time.monotonic() - self.started)
            extra = min(extra, extra_done + max(0, int(left / self._seconds_per_run())))
        return base + extra

    def _plan(self, cell, repeat):
        return RunPlan(cell=cell, repeat=repeat, argv=self.argv_for(cell),
                       directory=self.directory / "runs" / f"{cell.id}-r{repeat + 1}",
                       duration=self.options.duration, warmup_runs=self.options.warmup_runs,
                       warmup_timeout=self.options.warmup_timeout, base_env=dict(os.environ))

    def _verify_ort_late(self, record):
        """For a command whose ORT was unknown beforehand: check the axes once a session reported it."""
        if self.ort_verified or not record.get("ort_file"):
            return
        self.install = ortprobe.inspect_package(Path(record["ort_file"]).parent)
        self.ort_verified = True
        self.notes += matrix.check_ort_knows(self.axes, self.install, "loaded by the workload")

    def _run_name(self):
        if self.options.model:
            return Path(self.options.model).stem
        from types import SimpleNamespace

        from ..recording.recorder import default_run_name
        return default_run_name(SimpleNamespace(name=None, pid=None, command=self.options.command))

    def _progress(self, total_runs):
        return _Progress(self, total_runs)


class _Progress:
    """A rich progress bar on stderr, in estimated seconds so the ETA is honest
    about startup and warm-up time, not just the windows."""

    def __init__(self, sweep, total_runs):
        self.sweep = sweep
        self.total_runs = total_runs
        self.finished = 0
        self.last_end = 0.0     # seconds into the sweep when the last run ended
        self.bar = None

    def __enter__(self):
        self.started = time.monotonic()
        console = self.sweep.console
        if console is not None and self.sweep.options.progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[runs]}"),
                                TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                                console=console, transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("sweep", total=self._estimate(), runs="", eta="")
            self._show()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False

    def _estimate(self):
        # From finished runs only, so the estimate does not drift while a run is under way.
        per_run = (self.last_end / self.finished if self.finished
                   else STARTUP_GUESS_S + self.sweep.options.duration)
        return max(time.monotonic() - self.started, self.last_end + (self.total_runs - self.finished) * per_run)

    def _show(self, description=None):
        elapsed = time.monotonic() - self.started
        total = self._estimate()
        left = max(0, int(round(total - elapsed)))
        fields = {"runs": f"{self.finished}/{self.total_runs} runs", "eta": f"{left // 60}:{left % 60:02d}"}
        if description:
            fields["description"] = description
        self.bar.update(self.task, total=total, completed=min(elapsed, total), **fields)

    def start_run(self, cell):
        if self.bar is not None:
            self._show(f"{cell.label()} · {cell.condition_label()}")

    def tick(self):
        if self.bar is not None:
            self._show()

    def end_run(self, record, total_runs):
        self.finished += 1
        self.last_end = time.monotonic() - self.started
        self.total_runs = total_runs
        if self.bar is not None:
            self._show()
        if record.get("status") != "ok" and self.sweep.console is not None:
            self.sweep.console.print(f"[yellow]ortprof:[/] run {record['cell']}-r{record['repeat'] + 1} failed: "
                                     f"{record.get('error')}")
