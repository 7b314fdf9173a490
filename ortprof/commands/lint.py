"""`ortprof lint MODEL.onnx`: model-side performance checks."""
import json
import sys

import click

from ..errors import EXIT_GATE, OrtprofError
from ..findings import SEVERITIES


@click.command("lint")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--providers", metavar="EP[,EP...]",
              help="Execution providers to check node placement for, in preference order "
                   "(e.g. CUDAExecutionProvider,CPUExecutionProvider or cuda,cpu).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema ortprof.lint/1).")
@click.option("--fix", "fix_path", metavar="OUT.onnx", type=click.Path(dir_okay=False),
              help="Write a copy without initializers in the graph inputs (weights of an external-data "
                   "model go to OUT.onnx.data) and compare node counts after optimization.")
@click.option("--ort-profile", "ort_profile", metavar="FILE", type=click.Path(dir_okay=False),
              help="ORT's own profile of this model (enable_profiling, or the hook/ directory of "
                   "`ortprof record --ort-profile`): rank findings by the time their nodes take.")
@click.option("--fail-on-severity", type=click.Choice(SEVERITIES + ("never",)), default="warning",
              show_default=True, help="Exit with 1 when a finding of this severity or higher is present.")
def command(model, providers, as_json, fix_path, fail_on_severity, ort_profile):
    """Check MODEL for what keeps ONNX Runtime from running it fast.

    \b
    Runs ORT's graph optimizer at every level (disabled, basic, extended, all)
    and reports node counts and op histograms, initializers listed as graph
    inputs, unfused patterns, NHWC Transposes and, with --providers, nodes
    that fall back to the CPU.

    \b
    Exit codes: 0 no finding at or above --fail-on-severity, 1 at least one,
    3 the file is not a usable model.
    """
    from rich.console import Console

    from ..lint import checks, render, run

    status_console = Console(stderr=True)
    provider_list = providers.split(",") if providers is not None else None
    if status_console.is_terminal:
        with status_console.status("linting") as status:
            report = run.lint_model(model, provider_list, fix_path,
                                    progress=lambda message: status.update(message), ort_profile=ort_profile)
    else:
        report = run.lint_model(model, provider_list, fix_path, ort_profile=ort_profile)

    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        render.render_report(Console(file=sys.stdout, highlight=False), report)

    tripped = checks.gate_tripped(report.findings, fail_on_severity)
    if tripped:
        raise OrtprofError(f"{len(tripped)} finding(s) at or above {fail_on_severity}: "
                           f"{', '.join(f.id for f in tripped)}", EXIT_GATE)
