"""The terminal report (rich)."""
import os

from rich.console import Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..model.report import CATEGORIES

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
CATEGORY_LABELS = {"compute": "compute", "spin": "spin-wait", "caller_spin": "caller-spin", "sync": "sync",
                   "kernel": "kernel", "python": "python", "other": "other"}


def _pct(value):
    return "-" if value is None else f"{value:.1f}"


def render_report(report, console, top=8):
    ort = report.get("ort") or {}
    totals = report.get("totals") or {}
    header = Text.assemble(("ortprof report ", "bold"), (report.get("run", ""), "cyan"),
                           f"  window {report['window_seconds']:.1f} s")
    if ort.get("ort_version"):
        header.append(f"  ORT {ort['ort_version']}")
    if ort.get("symbol_status"):
        header.append(f" ({ort['symbol_status']})")
    console.print(header)
    if report.get("command"):
        console.print(Text("command: " + " ".join(report["command"]), style="dim"))
    if totals.get("cpu_pct") is not None or totals.get("proc_cpu_pct") is not None:
        line = f"process CPU: {_pct(totals.get('cpu_pct'))}% of one core from perf samples"
        if totals.get("proc_cpu_pct") is not None:
            line += f", {_pct(totals['proc_cpu_pct'])}% from /proc"
        if totals.get("mismatch"):
            line += f"  [bold red]mismatch {totals['mismatch_pct']:+.0f}%[/]"
        console.print(line)

    _threads(report, console)
    _sessions(report, console)
    _pool_workers(report, console)
    _operators(report, console, top)
    _python(report, console, top)
    _futex(report, console, top)
    _hot_paths(report, console, top)
    _findings(report, console)
    _empty_sections(report, console)
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")


def _empty_sections(report, console):
    """Say once per reason which sections have no data, so '-' columns are never a mystery."""
    by_reason = {}
    for section, reason in (report.get("empty_sections") or {}).items():
        by_reason.setdefault(reason, []).append(section)
    for reason, sections in by_reason.items():
        console.print(f"[yellow]empty:[/] {', '.join(sections)}: {reason}")


def _python(report, console, top):
    python = report.get("python") or {}
    threads = python.get("threads") or []
    if not threads:
        return
    table = Table(title=f"Python threads (py-spy at {python.get('rate_hz') or 0:.0f} Hz, % of one core)",
                  title_justify="left")
    for column in ("tid", "name", "active", "in run()", "outside run()", "waiting", "top stack (leaf last)"):
        table.add_column(column, justify="left" if column in ("name", "top stack (leaf last)") else "right")
    for thread in threads[:top]:
        stacks = thread.get("top_stacks") or []
        frames = stacks[0]["stack"].split(";") if stacks else []
        table.add_row(str(thread["tid"] if thread["tid"] is not None else "?"), thread.get("name") or "",
                      _pct(thread["cpu_pct"]), _pct(thread["in_run_pct"]), _pct(thread["outside_run_pct"]),
                      _pct(thread["waiting_pct"]), " > ".join(frames[-3:]))
    console.print(table)


def _threads(report, console):
    threads = [t for t in report.get("threads", []) if (t.get("cpu_pct") or 0) >= 0.05 or (t.get("proc_cpu_pct") or 0) >= 0.05]
    if not threads:
        return
    table = Table(title="CPU by thread (% of one core)", title_justify="left")
    table.add_column("tid", justify="right")
    table.add_column("role")
    table.add_column("CPU", justify="right")
    table.add_column("/proc", justify="right")
    for name in CATEGORIES:
        table.add_column(CATEGORY_LABELS[name], justify="right")
    for thread in threads:
        categories = thread.get("categories") or {}
        table.add_row(str(thread["tid"]), thread["role"], _pct(thread.get("cpu_pct")), _pct(thread.get("proc_cpu_pct")),
                      *(_pct(categories.get(name)) if categories else "-" for name in CATEGORIES))
    totals = report.get("totals") or {}
    if totals.get("cpu_pct") is not None:
        table.add_row("", "[bold]total[/]", _pct(totals["cpu_pct"]), _pct(totals.get("proc_cpu_pct")),
                      *(_pct(totals.get(f"{name}_pct")) for name in CATEGORIES), style="bold")
    console.print(table)


def _sessions(report, console):
    sessions = report.get("sessions") or []
    if not sessions:
        return
    table = Table(title="Inference latency (from the startup hook)", title_justify="left")
    for column in ("session", "model", "runs", "rate/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "p99/p50", "threads", "spinning"):
        table.add_column(column, justify="right" if column not in ("model",) else "left")
    for s in sessions:
        options = s.get("options") or {}
        table.add_row(str(s["session"]), os.path.basename(s.get("model") or "")[-40:], str(s["runs"]), _num(s.get("rate_per_s")),
                      _num(s.get("p50_ms")), _num(s.get("p95_ms")), _num(s.get("p99_ms")), _num(s.get("max_ms")),
                      _num(s.get("variance_p99_p50")), str(options.get("intra_op_num_threads", "?")),
                      (options.get("config") or {}).get("session.intra_op.allow_spinning", "1"))
    console.print(table)
    models = sorted({s["model"] for s in sessions if s.get("model") and not s["model"].startswith("<")})
    for model in models:
        console.print(Text(f"model-side checks (fusions, initializer inputs, layout): ortprof lint {model}", style="dim"))


def _pool_workers(report, console):
    workers = report.get("pool_workers") or []
    if not workers:
        return
    table = Table(title="Pool workers (tied to the session whose creation started them)", title_justify="left", box=None)
    for column in ("tid", "session", "pool", "role", "CPU %", "spin %", "evidence"):
        table.add_column(column, justify="right" if column in ("tid", "session", "CPU %", "spin %") else "left")
    for worker in workers:
        table.add_row(str(worker["tid"]), str(worker["session"]), worker["pool"], worker["role"],
                      _pct(worker.get("cpu_pct")), _pct(worker.get("spin_pct")), worker["evidence"])
    console.print(table)


def _operator_table(title, rows, by_node, sessions):
    table = Table(title=title, title_justify="left")
    columns = (["session"] if sessions > 1 else []) + (["node", "op"] if by_node else ["op", "provider"]) + [
        "calls", "ms/inference", "% of run()", "mean us", "parallel %", "workers", "CPU %", "spin+sync %"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("node", "op", "provider") else "right")
    for row in rows:
        cells = ([str(row["session"])] if sessions > 1 else []) + (
            [row["node"], row["op"]] if by_node else [row["op"], row["provider"].replace("ExecutionProvider", "")])
        table.add_row(*cells, str(row["calls"]), _num(row.get("ms_per_inference")), _pct(row.get("run_share_pct")),
                      f"{row['mean_us']:.0f}", _pct(row.get("parallel_calls_pct")), _num(row.get("workers_mean")),
                      _pct(row.get("cpu_pct")), _pct(row.get("spin_sync_pct")))
    return table


def _operators(report, console, top):
    operators = report.get("operators")
    if not operators:
        return
    sessions = len({row["session"] for row in operators.get("ops") or []})
    share = operators.get("node_share_pct")
    title = (f"Hot operators (ORT's profile: {operators['node_runs']} node runs, {operators['inferences']} inferences"
             + (f"; nodes are {share:.0f}% of run() time" if share is not None else "") + ")")
    if operators.get("ops"):
        console.print(_operator_table(title, operators["ops"][:top], False, sessions))
        console.print(_operator_table("Top nodes", operators["nodes"][:top], True, sessions))
    parallel = operators.get("parallel")
    if parallel and parallel["node_runs"]:
        line = (f"parallel sections: {parallel['node_runs']} node runs used the intra-op pool"
                + (f" ({parallel['per_inference']:.0f} per inference)" if parallel.get("per_inference") else "")
                + f"; {_pct(parallel['short_share_pct'])}% under {parallel['threshold_us']:.0f} us per section; "
                f"no worker took part in {_pct(parallel['no_worker_pct'])}%")
        if parallel.get("short_spin_sync_pct") is not None:
            line += f"; spin+sync around the short ones {parallel['short_spin_sync_pct']:.1f}% of a core"
        console.print(line)
    if operators.get("between_runs_spin_sync_pct") is not None:
        console.print(f"spin+sync between run() calls (after a run's last node): "
                      f"{operators['between_runs_spin_sync_pct']:.1f}% of a core")
    alignment = operators.get("alignment") or {}
    if alignment.get("runs_matched"):
        console.print(Text(f"clock join: {alignment['runs_matched']} runs matched; ORT's model_run starts "
                           f"{alignment['start_lead_us_p50']:.0f} us after the hook's run() and ends "
                           f"{alignment['end_lag_us_p50']:.0f} us before it (offset error <= "
                           f"{alignment['error_bound_us']:.0f} us)", style="dim"))
    for note in operators.get("notes") or []:
        console.print(f"[yellow]note:[/] {note}")


def _labels(report):
    """function -> op-type label, from ORT's profile (runs recorded with --ort-profile)."""
    return {row["function"]: row["ops"] for row in (report.get("operators") or {}).get("frames") or []}


def _labelled(name, labels):
    return f"{name} [{labels[name]}]" if name in labels else name


def _num(value):
    return "-" if value is None else f"{value:.2f}"


def _futex(report, console, top):
    futex = report.get("futex") or {}
    if not futex.get("recorded"):
        return
    per_inf = futex.get("calls_per_inference")
    how = {"bpftrace": "counted in BPF", "perf-tracepoints": "every call traced by perf"}.get(futex.get("method"))
    if how and futex.get("stacks_sampled") and (futex.get("stack_sample_period") or 1) > 1:
        how += f"; stacks of 1 call in {futex['stack_sample_period']}"
    console.print(f"[bold]futex[/]: {futex['calls']} calls, {futex['calls_per_s']:.0f}/s, "
                  f"{futex['time_ms_per_s']:.1f} ms/s inside"
                  + (f", {per_inf:.1f} per inference" if per_inf is not None else "")
                  + (f" ({how})" if how else ""))
    table = Table(box=None, pad_edge=False, show_header=True)
    for column in ("tid", "role", "calls/s", "waits", "wakes", "ms/s", "per inference"):
        table.add_column(column, justify="right")
    for row in futex.get("threads", [])[:top]:
        table.add_row(str(row["tid"]), row["role"], f"{row['calls_per_s']:.1f}", str(row["waits"]), str(row["wakes"]),
                      f"{row['time_ms_per_s']:.1f}", _num(row.get("calls_per_inference")))
    console.print(table)
    for item in futex.get("top_stacks", [])[:3]:
        console.print(Text(f"  {item['calls']:>6}  {item['stack']}", style="dim"), overflow="ellipsis", no_wrap=True)


def _hot_paths(report, console, top):
    paths = report.get("hot_paths") or []
    if not paths:
        return
    labels = _labels(report)
    table = Table(title="Hot call paths (leaf last)", title_justify="left", show_lines=False)
    table.add_column("CPU %", justify="right")
    table.add_column("role")
    table.add_column("category")
    table.add_column("path", overflow="fold")
    for path in paths[:top]:
        frames = path["stack"].split(";")
        shown = " > ".join(frames[-4:-1] + [_labelled(frames[-1], labels)])
        table.add_row(_pct(path["cpu_pct"]), path["role"], CATEGORY_LABELS.get(path["category"], path["category"]),
                      ("… > " if len(frames) > 4 else "") + shown)
    console.print(table)
    functions = Table(title="Top functions (self)", title_justify="left", box=None)
    functions.add_column("CPU %", justify="right")
    functions.add_column("function", overflow="fold")
    for item in (report.get("top_functions") or {}).get("self", [])[:top]:
        functions.add_row(_pct(item["cpu_pct"]), _labelled(item["function"], labels))
    console.print(functions)
    spots = [spot for spot in report.get("hot_spots") or [] if spot.get("source")]
    if spots:
        table = Table(title="Hot spots with source lines", title_justify="left", box=None)
        for column in ("CPU %", "function", "source"):
            table.add_column(column, justify="right" if column == "CPU %" else "left")
        for spot in spots[:top]:
            table.add_row(_pct(spot["cpu_pct"]), spot["function"], spot["source"])
        console.print(table)


def _findings(report, console):
    findings = report.get("findings") or []
    if not findings:
        console.print("[green]No findings.[/]" if report.get("samples") else
                      "[yellow]No findings; the CPU-category findings (spin-wait, caller-spin, futex) need perf samples.[/]")
        return
    for finding in findings:
        style = SEVERITY_STYLE.get(finding["severity"], "")
        evidence = ", ".join(f"{k}={v}" for k, v in finding.get("evidence", {}).items() if v is not None)
        parts = [Text(finding["title"], style="bold"), Text(f"evidence: {evidence}", style="dim")]
        if finding.get("explanation"):
            parts.append(Text(finding["explanation"]))
        if finding.get("remedy"):
            lexer = "bash" if finding["remedy"].startswith("ortprof") else "python"
            parts.append(Syntax(finding["remedy"], lexer, theme="ansi_dark", background_color="default"))
        if finding.get("tradeoff"):
            parts.append(Text("trade-off: " + finding["tradeoff"], style="italic"))
        console.print(Panel(Group(*parts), title=f"[{style}]{finding['severity'].upper()}[/] {finding['id']}",
                            title_align="left", border_style=style))
