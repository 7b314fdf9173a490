"""ortprof report: diagnose a recorded run, in any of the output formats."""
import click

from ..errors import EXIT_GATE, InputError
from .common import analyze_run_with_status, format_targets, write_targets

FORMAT_HELP = ("Output format NAME, to FILE or stdout ('-' or no '=FILE'): terminal, json, html, folded, "
               "speedscope, pprof. Repeatable: --format html=r.html --format pprof=cpu.pb.gz.")


@click.command()
@click.argument("run", required=False)
@click.option("--format", "formats", multiple=True, metavar="NAME[=FILE]", help=FORMAT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema ortprof.report/1); "
              "same as --format json.")
@click.option("--folded", "folded_path", metavar="FILE",
              help="Write folded stacks (flamegraph.pl / inferno / speedscope); '-' for stdout.")
@click.option("--by", type=click.Choice(["thread", "role", "process"]), default="thread", show_default=True,
              help="Root frame of folded stacks: role-tid, role, or none.")
@click.option("--html", "html_path", metavar="FILE", help="Also write the self-contained HTML report.")
@click.option("--fail-on", "fail_on", multiple=True, metavar="EXPR",
              help="Exit 1 when EXPR holds: spin_pct>20, futex.calls_per_inference>50, "
                   "finding:cpu-throttling, severity:warning. Repeatable or comma-separated.")
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True, help="Rows in the hot-path and futex tables.")
@click.option("--no-symbols", is_flag=True, help="Skip decoding the stripped ORT module (names stay addresses).")
def command(run, formats, as_json, folded_path, by, html_path, fail_on, top, no_symbols):
    """Diagnose RUN (default: the latest run): CPU by thread and category
    (compute, spin-wait, caller-spin, sync, kernel, python), futex overhead,
    latency, hot paths, and findings with remedies.

    \b
    Exit codes: 0 ok, 1 a --fail-on expression held, 3 bad run directory
    or unreadable perf data (the partial report is still written),
    4 perf missing.
    """
    from ..analysis.gates import evaluate, parse_gates

    gates = parse_gates(fail_on)
    specs = list(formats)
    if as_json:
        specs.append("json")
    if folded_path:
        specs.append(f"folded={folded_path}")
    if html_path:
        specs.append(f"html={html_path}")
    if not any(spec.partition("=")[2] in ("", "-") for spec in specs):
        specs.append("terminal")   # something always goes to stdout unless every format has a file
    targets = format_targets(specs, top=top, by=by)   # opens files first: a bad path fails before decoding
    quiet = any(target.path is None and target.name != "terminal" for target in targets)
    profile, report = analyze_run_with_status(run, with_ort_symbols=not no_symbols, quiet=quiet)
    tripped = evaluate(gates, report)
    report.gates = {"expressions": list(fail_on), "tripped": tripped}
    write_targets(targets, profile, report)
    if report.unreadable_perf_data:
        # The partial report is out; the broken input still fails the command.
        raise InputError(report.unreadable_perf_data)
    if tripped:
        click.echo("ortprof: --fail-on: " + "; ".join(tripped), err=True)
        raise SystemExit(EXIT_GATE)
