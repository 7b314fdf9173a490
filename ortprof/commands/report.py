"""ortprof report: diagnose a recorded run."""
import sys

import click

from ..errors import EXIT_GATE, InputError
from .common import emit_json, stderr_console, stdout_console


@click.command()
@click.argument("run", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema ortprof.report/1).")
@click.option("--folded", "folded_path", metavar="FILE",
              help="Write folded stacks (flamegraph.pl / inferno / speedscope); '-' for stdout.")
@click.option("--html", "html_path", metavar="FILE", help="Also write a self-contained HTML report.")
@click.option("--fail-on", "fail_on", multiple=True, metavar="EXPR",
              help="Exit 1 when EXPR holds: spin_pct>20, futex.calls_per_inference>50, "
                   "finding:cpu-throttling, severity:warning. Repeatable or comma-separated.")
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True, help="Rows in the hot-path and futex tables.")
@click.option("--no-symbols", is_flag=True, help="Skip decoding the stripped ORT module (names stay addresses).")
def command(run, as_json, folded_path, html_path, fail_on, top, no_symbols):
    """Diagnose RUN (default: the latest run): CPU by thread and category
    (compute, spin-wait, caller-spin, sync, kernel, python), futex overhead,
    latency, hot paths, and findings with remedies.

    \b
    Exit codes: 0 ok, 1 a --fail-on expression held, 3 bad run directory,
    4 perf missing.
    """
    from ..analysis.gates import evaluate, parse_gates
    from ..analysis.report import build_report
    from ..recording.rundir import resolve_run

    gates = parse_gates(fail_on)
    run_dir = resolve_run(run)
    if folded_path == "-" and as_json:
        raise InputError("--folded - and --json both want stdout: give --folded a file")
    folded_stream = None
    if folded_path and folded_path != "-":
        try:
            folded_stream = open(folded_path, "w")   # before decoding: a bad path fails at once
        except OSError as exc:
            raise InputError(f"{folded_path}: cannot write ({exc.strerror or exc})")

    def write_folded(lines):
        stream = folded_stream or sys.stdout
        try:
            for line in lines:
                stream.write(line + "\n")
            stream.flush()
        except OSError as exc:
            raise InputError(f"{folded_path}: cannot write ({exc.strerror or exc})")
    console = stderr_console()
    with console.status("decoding perf data", spinner="dots") if not as_json and folded_path != "-" else _nothing():
        report = build_report(run_dir, with_ort_symbols=not no_symbols, folded=write_folded if folded_path else None)
    if folded_stream is not None:
        folded_stream.close()
    tripped = evaluate(gates, report)
    report["gates"] = {"expressions": list(fail_on), "tripped": tripped}
    if html_path:
        from ..render.html import render_html
        try:
            with open(html_path, "w") as stream:
                stream.write(render_html(report))
        except OSError as exc:
            raise InputError(f"{html_path}: cannot write ({exc.strerror or exc})")
    if as_json:
        emit_json(report)
    elif folded_path != "-":
        from ..render.terminal import render_report
        render_report(report, stdout_console(), top=top)
    if report.get("unreadable_perf_data"):
        # The partial report is out; the broken input still fails the command.
        raise InputError(report["unreadable_perf_data"])
    if tripped:
        click.echo("ortprof: --fail-on: " + "; ".join(tripped), err=True)
        raise SystemExit(EXIT_GATE)


def _nothing():
    import contextlib
    return contextlib.nullcontext()
