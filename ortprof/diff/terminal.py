"""The diff in the terminal (rich): one table per section, verdicts beside every delta."""
from rich.table import Table
from rich.text import Text

from ..render.terminal import CATEGORY_LABELS

VERDICT_STYLE = {"up": "bold", "down": "bold", "within noise": "dim", "no interval": "italic"}
PATH_FRAMES = 4     # the leaf end of a hot path: its last frames say what it is


def _num(value, digits=2, sign=False):
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _interval(q, digits=2):
    return "-" if not q.get("interval") else f"[{q['interval'][0]:+.{digits}f}, {q['interval'][1]:+.{digits}f}]"


def _verdict(q):
    label = q.get("verdict") or "-"
    return Text(label, style=VERDICT_STYLE.get(label, ""))


def _ratio(q):
    return "-" if q.get("ratio") is None else f"{q['ratio']:.2f}x"


def row_label(row):
    if row["group"] == "total":
        return f"process ({row['source']})"
    if row["group"] == "category":
        return CATEGORY_LABELS.get(row["name"], row["name"])
    return f"role {row['name']}"


def render_diff(diff, console):
    before, after = diff["before"], diff["after"]
    console.print(Text.assemble(("ortprof diff ", "bold"), (before["source"], "cyan"), " -> ", (after["source"], "cyan")))
    console.print(f"BEFORE: {before['window_seconds']:.1f} s, {before['inferences']} inferences · "
                  f"AFTER: {after['window_seconds']:.1f} s, {after['inferences']} inferences")
    for warning in diff["warnings"]:
        console.print(f"[bold yellow]warning:[/] {warning}")
    _changes(diff, console)
    _cpu(diff, console)
    _futex_and_throttling(diff, console)
    _latency(diff, console)
    _latency_breakdown(diff, console)
    _findings(diff, console)
    _paths(diff, console)
    for section, why in diff["not_compared"].items():
        console.print(f"[yellow]not compared:[/] {section}: {why}")
    for note in diff["notes"]:
        console.print(f"[dim]note: {note}[/]")
    console.print("[dim]verdicts: up/down = outside the 95% bootstrap interval and above the noise floor; "
                  "'within noise' is neither a win nor a loss; 'no interval' = above the floor but the input "
                  "has no data for an interval[/]")
    _gates(diff, console)


def _changes(diff, console):
    if not diff["changes"]:
        console.print("[bold]what changed:[/] nothing the runs record (settings, ORT, quota, command, machine)")
        return
    table = Table(title="what changed", title_justify="left", title_style="bold")
    for column in ("", "BEFORE", "AFTER"):
        table.add_column(column, overflow="fold")
    for change in diff["changes"]:
        table.add_row(change["what"], change["before"] or "-", change["after"] or "-")
    console.print(table)


def _cpu(diff, console):
    if not diff["cpu"]:
        return
    per_inference = diff["per_inference"]
    table = Table(title="CPU: % of one core" + (" and CPU-ms per inference (interval and verdict: per inference)"
                                                if per_inference else ""), title_justify="left", title_style="bold")
    table.add_column("")
    columns = ["before %", "after %", "delta %"]
    if per_inference:
        columns += ["before ms/inf", "after ms/inf", "delta ms/inf"]
    for column in columns + ["ratio", "95% interval"]:
        table.add_column(column, justify="right")
    table.add_column("verdict")
    for row in diff["cpu"]:
        pct, ms = row["pct"], row["ms_per_inference"]
        if not any((pct["before"], pct["after"])):
            continue
        judged = ms if per_inference else pct
        cells = [row_label(row), _num(pct["before"], 1), _num(pct["after"], 1), _num(pct["delta"], 1, True)]
        if per_inference:
            cells += [_num(ms["before"]), _num(ms["after"]), _num(ms["delta"], 2, True)]
        table.add_row(*cells, _ratio(judged), _interval(judged, 1), _verdict(judged))
    console.print(table)


def _small_table(title, rows):
    table = Table(title=title, title_justify="left", title_style="bold")
    table.add_column("")
    for column in ("before", "after", "delta", "ratio", "95% interval"):
        table.add_column(column, justify="right")
    table.add_column("verdict")
    for label, q in rows:
        table.add_row(label, _num(q["before"]), _num(q["after"]), _num(q["delta"], 2, True), _ratio(q),
                      _interval(q), _verdict(q))
    return table


def _futex_and_throttling(diff, console):
    rows = []
    futex = diff.get("futex")
    if futex:
        rows += [(f"futex calls {futex['unit']}", futex["calls"]),
                 (f"futex time ms {futex['unit']}", futex["time_ms"])]
    throttling = diff.get("throttling")
    if throttling:
        rows += [("throttled ms", throttling["throttled_ms"]),
                 ("throttled periods", throttling["throttled_periods"]),
                 ("throttled ms per inference", throttling["throttled_ms_per_inference"])]
    if rows:
        console.print(_small_table("futex and throttling", rows))


def _latency(diff, console):
    for row in diff["latency"]:
        model = (row.get("model") or "").rsplit("/", 1)[-1]
        rows = [(name.replace("_ms", " ms"), row[name]) for name in ("p50_ms", "p95_ms", "p99_ms")]
        rows += [("runs", row["runs"]), ("rate /s", row["rate_per_s"])]
        console.print(_small_table(f"latency, session {row['session']} {model}", rows))


STATE_LABELS = {"on_cpu": "running", "runnable": "runnable", "throttled": "throttled", "blocked": "blocked",
                "other": "other off-CPU"}


def breakdown_rows(row):
    """[(label, quantity)] of one session's latency breakdown diff, typical then slow runs."""
    rows = []
    for group, figures in row["groups"].items():
        rows.append((f"{group} run() ms ({figures['runs']['before']:.0f} -> {figures['runs']['after']:.0f} runs)",
                     figures["run_ms"]))
        rows += [(f"{group}   caller {STATE_LABELS.get(state, state)} ms", q) for state, q in figures["states_ms"].items()]
        rows += [(f"{group}   held by {held['comm']} ms", held) for held in figures["held_by"]]
        rows += [(f"{group}   {name.replace('_ms', '').replace('wakeup', 'wake-up')} ms", figures[name])
                 for name in ("wakeup_ms", "straggler_ms") if name in figures]
    return rows


def _latency_breakdown(diff, console):
    for row in diff.get("latency_breakdown") or []:
        model = (row.get("model") or "").rsplit("/", 1)[-1]
        cause = row["cause"]
        title = f"latency breakdown, session {row['session']} {model} (ms per run)"
        if cause["before"] or cause["after"]:
            title += f"; slow runs' cause: {cause['before'] or '-'} -> {cause['after'] or '-'}"
        console.print(_small_table(title, breakdown_rows(row)))


def _findings(diff, console):
    findings = diff["findings"]
    for state, style in (("resolved", "bold"), ("new", "bold"), ("persisting", "")):
        for f in findings[state]:
            console.print(Text.assemble((f"finding {state}: ", style), (f["id"], "cyan"), f" ({f['severity']}) ",
                                        f["title"]))


def _short(path):
    frames = path.split(";")
    return ("…;" if len(frames) > PATH_FRAMES else "") + ";".join(frames[-PATH_FRAMES:])


def _paths(diff, console):
    for title, section, show in (("hot paths", diff["hot_paths"], _short), ("functions (self)", diff["functions"], str)):
        unit = "ms/inf" if section["unit"] == "ms_per_inference" else "% core"
        for direction in ("grew", "shrank"):
            rows = [row for row in section[direction] if row["verdict"] != "within noise"]
            hidden = len(section[direction]) - len(rows)
            if not rows:
                if hidden:
                    console.print(f"[dim]{title} that {direction}: none beyond noise ({hidden} within noise)[/]")
                continue
            table = Table(title=f"{title} that {direction} ({unit})", title_justify="left", title_style="bold")
            for column in ("before", "after", "delta"):
                table.add_column(column, justify="right")
            table.add_column("verdict")
            table.add_column("path" if title == "hot paths" else "function", overflow="fold")
            if hidden:
                table.caption = f"and {hidden} more within noise (--json lists them)"
            for row in rows:
                table.add_row(_num(row["before"]), _num(row["after"]), _num(row["delta"], 2, True),
                              Text(row["verdict"] or "-", style=VERDICT_STYLE.get(row["verdict"], "")),
                              show(row["name"]))
            console.print(table)


def _gates(diff, console):
    gates = diff.get("gates")
    if not gates or not gates["results"]:
        return
    console.print("[bold]gates[/] (only significant changes trip a gate: outside the 95% interval and the noise "
                  "floor; findings by their state)")
    for result in gates["results"]:
        mark = "[bold red]HOLDS[/]" if result["holds"] else "[green]does not hold[/]"
        console.print(f"  {result['expression']}: {mark} · {result['detail']}")
