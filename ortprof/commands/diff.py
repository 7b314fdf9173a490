"""ortprof diff: did the fix work? Two runs (or saved reports) compared, with noise intervals."""
import os

import click

from ..errors import EXIT_GATE, InputError


def _open_output(path, what):
    if path in (None, "-"):
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot write ({exc.strerror or exc})")


@click.command()
@click.argument("before")
@click.argument("after")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON (schema ortprof.diff/1).")
@click.option("--html", "html_path", metavar="FILE",
              help="Write a self-contained HTML page with the differential flame graph.")
@click.option("--folded-diff", "folded_path", metavar="FILE",
              help="Write `stack before after` lines (flamegraph.pl's difffolded format); '-' for stdout.")
@click.option("--fail-on", "fail_on", multiple=True, metavar="EXPR",
              help="Exit 1 when a significant change holds: cpu_ms_per_inference>+10%, p95_ms>+20%, "
                   "spin_pct>+5, finding:spin-wait:new. Repeatable or comma-separated.")
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True,
              help="Hot paths and functions listed per direction (grew, shrank).")
@click.option("--no-symbols", is_flag=True, help="Skip decoding the stripped ORT module (names stay addresses).")
def command(before, after, as_json, html_path, folded_path, fail_on, top, no_symbols):
    """Compare BEFORE and AFTER: run directories (path or name, see 'ortprof runs')
    or report JSON files written by 'ortprof report --json'.

    \b
    Shows what changed (session options, ORT, quota, command, machine), CPU per
    category and role as % of a core and CPU-ms per inference, futex and
    throttling, latency p50/p95/p99 per session with 95% bootstrap intervals,
    findings resolved/new/persisting, and the hot paths that grew or shrank.
    A delta inside the noise is labelled 'within noise'.

    \b
    ortprof diff before-run after-run
    ortprof diff before-run after-run --html diff.html --folded-diff diff.folded
    ortprof diff base.json candidate-run --fail-on 'spin_pct>+5' --fail-on 'p95_ms>+20%'

    \b
    Exit codes: 0 ok, 1 a --fail-on gate held, 3 bad input (missing or
    incomplete run, report JSON of another schema, unwritable file), 4 perf missing.
    """
    from ..diff.compare import compare
    from ..diff.gates import evaluate_diff_gates, parse_diff_gates
    from ..diff.inputs import load_side
    from .common import emit_json, stderr_console, stdout_console

    gates = parse_diff_gates(fail_on)
    if as_json and folded_path == "-":
        raise InputError("--json and --folded-diff - both want stdout: give --folded-diff a file")
    html_stream = _open_output(html_path, "--html")
    folded_stream = _open_output(folded_path, "--folded-diff")
    try:
        with stderr_console().status("decoding the two runs", spinner="dots"):
            sides = [load_side(spec, label, with_ort_symbols=not no_symbols)
                     for spec, label in ((before, "BEFORE"), (after, "AFTER"))]
        diff = compare(*sides, top=top)
        results = evaluate_diff_gates(gates, diff)
        diff["gates"] = {"expressions": list(fail_on), "results": results}
        if folded_path:
            from ..diff.folded import folded_diff_lines
            lines = list(folded_diff_lines(*sides))
            stream = folded_stream or click.get_text_stream("stdout")
            stream.write("".join(line + "\n" for line in lines))
        if html_stream is not None:
            from ..render.diff_html import render_diff_html
            html_stream.write(render_diff_html(diff, *sides))
    except BaseException:
        for stream, path in ((html_stream, html_path), (folded_stream, folded_path)):
            if stream is not None:
                stream.close()
                os.unlink(path)   # no half-written file left behind
        raise
    for stream in (html_stream, folded_stream):
        if stream is not None:
            stream.close()
    if as_json:
        emit_json(diff)
    elif folded_path != "-":
        from ..diff.terminal import render_diff
        render_diff(diff, stdout_console())
    tripped = [result for result in results if result["holds"]]
    if tripped:
        click.echo("ortprof: --fail-on (significant changes only): " +
                   "; ".join(f"{r['expression']} ({r['detail']})" for r in tripped), err=True)
        raise SystemExit(EXIT_GATE)
