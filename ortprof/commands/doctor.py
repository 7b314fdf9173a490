"""`ortprof doctor`: can this machine profile ONNX Runtime?"""
import json
from contextlib import nullcontext

import click


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help='Print one JSON object (schema "ortprof.doctor/1").')
@click.option("--check", "only", multiple=True, metavar="ID",
              help="Run only this check (repeatable), e.g. --check perf --check py-spy.")
@click.option("--quick", is_flag=True,
              help="Skip the real recording tests; only the millisecond checks that `record` runs.")
def command(as_json, only, quick):
    """Check perf, py-spy, cgroups, onnxruntime, the CPU and build tools.

    Each check prints ok, warning or fail, one line of detail and the exact fix.
    By default perf really samples a child process with dwarf call graphs and
    records futex tracepoints, and py-spy really dumps a child process.

    \b
    Exit codes: 0 no check failed (warnings allowed), 4 a check failed.
    """
    from rich.console import Console

    from ..checks import failures
    from ..doctor import render, run_checks, to_json
    from ..errors import EnvironmentProblem

    thorough = not quick
    status = Console(stderr=True)
    with status.status("running checks ...", spinner="dots") if status.is_terminal else nullcontext():
        checks = run_checks(list(only) or None, thorough=thorough)
    if as_json:
        click.echo(json.dumps(to_json(checks), indent=2))
    else:
        render(checks, Console())
    failed = failures(checks)
    if failed:
        names = ", ".join(check.id for check in failed)
        raise EnvironmentProblem(f"{len(failed)} check(s) failed: {names}")

