"""Sweep results: per-cell figures from the runs, the sweep.json document, and
the directory it lives in (`.ortprof/sweeps/<time>-<name>/`, beside the runs).

sweep.json is rewritten after every run, so a sweep that is interrupted or
killed still leaves every finished cell readable by `ortprof sweep --show`.
"""
import json
import os
from pathlib import Path

from ..errors import InputError
from ..recording.rundir import new_directory, runs_root
from . import recommend
from .stats import estimate

SCHEMA = "ortprof.sweep/1"
DOCUMENT = "sweep.json"
CSV_NAME = "sweep.csv"
# Figures averaged over repeats, each with its own 95% interval.
FIGURES = ("cpu_pct", "cpu_ms_per_inference", "p50_ms", "p95_ms", "p99_ms", "throughput",
           "throttled_ms_per_s")
BUSY_NEIGHBOUR_PCT = 20.0   # other processes' CPU (% of a core) that makes a run's figures doubtful
FEW_INFERENCES = 20         # a run's p95/p99 from fewer inferences is close to its maximum


def sweeps_root():
    if os.environ.get("ORTPROF_SWEEPS_DIR"):
        return Path(os.environ["ORTPROF_SWEEPS_DIR"])
    return runs_root().parent / "sweeps"


def create_directory(name, output=None):
    if output is not None and (Path(output) / DOCUMENT).exists():
        raise InputError(f"{output} already holds a sweep; choose another --output")
    return new_directory(sweeps_root(), name, output, "sweep")


def save(directory, document):
    """Atomic rewrite, so a reader never sees half a document."""
    tmp = Path(directory) / (DOCUMENT + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    os.replace(tmp, Path(directory) / DOCUMENT)


def load(spec):
    """A sweep document from a directory, a sweep.json, or a name under the sweeps root."""
    candidates = [Path(spec), sweeps_root() / spec]
    for candidate in candidates:
        path = candidate if candidate.name == DOCUMENT else candidate / DOCUMENT
        if path.is_file():
            try:
                document = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(f"{path}: unreadable sweep document ({exc})")
            if not str(document.get("schema", "")).startswith("ortprof.sweep/"):
                raise InputError(f"{path}: not an ortprof sweep (schema {document.get('schema')!r})")
            document["directory"] = str(path.parent)
            return document
    raise InputError(f"{spec}: no sweep there (no {DOCUMENT}); sweeps live under {sweeps_root()}")


def aggregate_cell(cell, is_defaults, runs):
    """The cell's entry in sweep.json from its runs (all repeats so far)."""
    ok = [run for run in runs if run.get("status") == "ok"]
    failed = [run for run in runs if run.get("status") != "ok"]
    if not runs:
        status = "not run"
    elif not ok:
        status = "failed"
    elif failed:
        status = "partial"
    else:
        status = "ok"
    entry = {
        "id": cell.id, "label": cell.label(), "settings": cell.settings(),
        "condition": cell.condition_map, "condition_label": cell.condition_label(),
        "is_defaults": is_defaults, "status": status, "repeats": len(ok),
        "failures": [{"repeat": run["repeat"], "error": run.get("error"), "exit_code": run.get("exit_code")}
                     for run in failed],
    }
    ci95 = {}
    for figure in FIGURES:
        value = estimate([run.get(figure) for run in ok])
        entry[figure] = None if value is None else round(value.mean, 3)
        ci95[figure] = None if value is None or value.half_width is None \
            else [round(value.low, 3), round(value.high, 3)]
    entry["ci95"] = ci95
    entry["inferences"] = sum(run.get("inferences", 0) for run in ok)
    if ok:
        first = ok[0]
        entry["effective"] = first.get("effective")
        entry["ort_version"] = first.get("ort_version")
        entry["threads_in_process"] = sorted({run.get("threads_in_process") for run in ok})
        background = estimate([run.get("background_cpu_pct") for run in ok])
        entry["background_cpu_pct"] = None if background is None else round(background.mean, 1)
    return entry


def build_document(meta, cells, reference_ids, runs, budget, status):
    """The whole sweep.json: meta, aggregated cells (with Pareto front, ratios and
    budget flags), the recommendations and every run's own figures."""
    by_cell = {}
    for run in runs:
        by_cell.setdefault(run["cell"], []).append(run)
    entries = [aggregate_cell(cell, cell.id in reference_ids, by_cell.get(cell.id, [])) for cell in cells]
    document = dict(meta, schema=SCHEMA, status=status, cells=entries, runs=runs)
    apply_budget(document, budget)
    return document


def apply_budget(document, budget):
    """(Re)compute Pareto front, ratios, budget flags and recommendations in place."""
    per_condition = recommend.annotate(document["cells"], budget)
    document["latency_budget"] = {"text": budget.text, "meaning": budget.describe()}
    document["recommendations"] = per_condition
    document["recommendation"] = recommend.overall(per_condition, document["cells"])
    document["warnings"] = warnings_for(document)
    return document


def warnings_for(document):
    notes = []
    busy = [run for run in document.get("runs", [])
            if run.get("status") == "ok" and (run.get("background_cpu_pct") or 0) > BUSY_NEIGHBOUR_PCT]
    if busy:
        worst = max(run["background_cpu_pct"] for run in busy)
        notes.append(f"{len(busy)} run(s) shared the machine with other busy processes (up to {worst:.0f}% "
                     "of a core besides the workload): their CPU and latency figures are skewed")
    few = [run for run in document.get("runs", [])
           if run.get("status") == "ok" and run.get("inferences", 0) < FEW_INFERENCES]
    if few:
        notes.append(f"{len(few)} run(s) measured fewer than {FEW_INFERENCES} inferences: their p95/p99 are "
                     "nearly their maximum; raise --duration for a low request rate")
    failed = [cell for cell in document["cells"] if cell["status"] in ("failed", "partial")]
    for cell in failed:
        first = cell["failures"][0]
        notes.append(f"{cell['label']} ({cell['condition_label']}): {len(cell['failures'])} run(s) failed: "
                     f"{first['error']}")
    return notes
