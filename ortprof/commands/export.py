"""ortprof export: write one run's profile in another tool's format."""
import click

from ..errors import InputError
from .common import analyze_run_with_status, format_targets, write_targets


@click.command()
@click.argument("run", required=False)
@click.option("--format", "format_name", required=True, metavar="NAME",
              help="speedscope, pprof, folded, html, json or terminal.")
@click.option("-o", "--output", metavar="FILE",
              help="Where to write (default: stdout; required for binary formats on a terminal).")
@click.option("--by", type=click.Choice(["thread", "role", "process"]), default="thread", show_default=True,
              help="Folded stacks' root frame: role-tid, role, or none.")
@click.option("--no-symbols", is_flag=True, help="Skip decoding the stripped ORT module (names stay addresses).")
def command(run, format_name, output, by, no_symbols):
    """Export RUN (default: the latest run) as NAME.

    \b
    ortprof export --format speedscope -o run.speedscope.json   # https://www.speedscope.app, or `speedscope FILE`
    ortprof export --format pprof -o cpu.pb.gz                   # go tool pprof -http=:8080 cpu.pb.gz
    ortprof export --format folded --by role | flamegraph.pl > flame.svg

    \b
    Exit codes: 0 ok, 3 bad run directory, unknown format or unwritable file, 4 perf missing.
    """
    import sys
    targets = format_targets([f"{format_name}={output or '-'}"], by=by)
    if targets[0].exporter.binary and output in (None, "-") and sys.stdout.isatty():
        raise InputError(f"{format_name} is binary: give -o FILE (or pipe stdout)")
    profile, report = analyze_run_with_status(run, with_ort_symbols=not no_symbols)
    write_targets(targets, profile, report)
    if report.unreadable_perf_data:
        raise InputError(report.unreadable_perf_data)
