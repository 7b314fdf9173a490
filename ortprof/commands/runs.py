"""ortprof runs: list recordings."""
import click
from rich.table import Table

from ..errors import InputError
from ..recording.rundir import list_runs, runs_root
from .common import emit_json, stdout_console


def _row(run):
    try:
        manifest = run.read_manifest()
    except InputError as error:
        return {"run": str(run.path), "error": str(error)}
    return {
        "run": str(run.path), "name": manifest.name, "started_at": manifest.started_at,
        "command": manifest.command, "pid": manifest.profiled_pid or manifest.pid,
        "seconds": manifest.window_seconds, "status": manifest.status,
        "exit_code": manifest.exit_code, "bytes": sum(manifest.files.values()),
        "profilers": sorted(manifest.profilers),
    }


@click.command()
@click.option("--root", type=click.Path(file_okay=False), help="Runs directory (default .ortprof/runs or $ORTPROF_RUNS_DIR).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def command(root, as_json):
    """List recorded runs: time, command, duration, size, exit code."""
    rows = [_row(run) for run in list_runs(root)]
    if as_json:
        emit_json({"schema": "ortprof.runs/1", "root": str(root or runs_root()), "runs": rows})
        return
    console = stdout_console()
    if not rows:
        console.print(f"no runs under {root or runs_root()}")
        return
    table = Table()
    for column in ("run", "started", "command", "seconds", "size", "status", "exit"):
        table.add_column(column)
    for row in rows:
        if "error" in row:
            table.add_row(row["run"], "", row["error"], "", "", "", "")
            continue
        command_text = " ".join(row["command"] or [f"--pid {row['pid']}"])
        table.add_row(row["run"], row["started_at"] or "", command_text[:60],
                      f"{row['seconds']:.1f}" if row["seconds"] else "-", f"{row['bytes'] / 1e6:.1f} MB",
                      row["status"] or "", "" if row["exit_code"] is None else str(row["exit_code"]))
    console.print(table)
