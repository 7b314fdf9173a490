"""The terminal report (rich), from the typed Report (ortprof.model.report)."""
import os

from rich.console import Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..analysis.roles import RUNS_TOGETHER
from ..model.report import CATEGORIES

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
CATEGORY_LABELS = {"compute": "compute", "spin": "spin-wait", "caller_spin": "caller-spin", "sync": "sync",
                   "kernel": "kernel", "python": "python", "other": "other"}


def _pct(value):
    return "-" if value is None else f"{value:.1f}"


def render_report(report, console, top=8):
    """Print `report` (a Report) on the rich `console`; tables list at most `top` rows."""
    ort, totals = report.ort, report.totals
    header = Text.assemble(("ortprof report ", "bold"), (report.run or "", "cyan"),
                           f"  window {report.window_seconds:.1f} s")
    if ort.ort_version:
        header.append(f"  ORT {ort.ort_version}")
    if ort.symbol_status:
        header.append(f" ({ort.symbol_status})")
    console.print(header)
    if report.command:
        console.print(Text("command: " + " ".join(report.command), style="dim"))
    if totals.cpu_pct is not None or totals.proc_cpu_pct is not None:
        line = f"process CPU: {_pct(totals.cpu_pct)}% of one core from perf samples"
        if totals.proc_cpu_pct is not None:
            line += f", {_pct(totals.proc_cpu_pct)}% from /proc"
        if totals.mismatch:
            line += f"  [bold red]mismatch {totals.mismatch_pct:+.0f}%[/]"
        console.print(line)

    _threads(report, console)
    _sessions(report, console)
    _slow_runs(report, console)
    _pool_workers(report, console)
    _operators(report, console, top)
    _python(report, console, top)
    _futex(report, console, top)
    _hot_paths(report, console, top)
    _findings(report, console)
    _empty_sections(report, console)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")


def _empty_sections(report, console):
    """Say once per reason which sections have no data, so '-' columns are never a mystery."""
    by_reason = {}
    for section, reason in report.empty_sections.items():
        by_reason.setdefault(reason, []).append(section)
    for reason, sections in by_reason.items():
        console.print(f"[yellow]empty:[/] {', '.join(sections)}: {reason}")


def _python(report, console, top):
    python = report.python
    threads = python.threads
    if not threads:
        return
    table = Table(title=f"Python threads (py-spy at {python.rate_hz or 0:.0f} Hz, % of one core)",
                  title_justify="left")
    for column in ("tid", "name", "active", "in run()", "outside run()", "waiting", "top stack (leaf last)"):
        table.add_column(column, justify="left" if column in ("name", "top stack (leaf last)") else "right")
    for thread in threads[:top]:
        stacks = thread.top_stacks
        frames = stacks[0].stack.split(";") if stacks else []
        table.add_row(str(thread.tid if thread.tid is not None else "?"), thread.name or "",
                      _pct(thread.cpu_pct), _pct(thread.in_run_pct), _pct(thread.outside_run_pct),
                      _pct(thread.waiting_pct), " > ".join(frames[-3:]))
    console.print(table)


def _threads(report, console):
    threads = [t for t in report.threads if (t.cpu_pct or 0) >= 0.05 or (t.proc_cpu_pct or 0) >= 0.05]
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
        categories = thread.categories
        table.add_row(str(thread.tid), thread.role, _pct(thread.cpu_pct), _pct(thread.proc_cpu_pct),
                      *(_pct(categories.get(name)) if categories else "-" for name in CATEGORIES))
    totals = report.totals
    if totals.cpu_pct is not None:
        table.add_row("", "[bold]total[/]", _pct(totals.cpu_pct), _pct(totals.proc_cpu_pct),
                      *(_pct(getattr(totals, f"{name}_pct")) for name in CATEGORIES), style="bold")
    console.print(table)


SESSION_SOURCES = {"hook": "the startup hook", "attach": "the hook attached to the running process",
                   "capi": "uprobes on ORT's C API", "pybind": "uprobes on the Python binding's run()"}


def threads_and_spinning(options, options_known, spinning_default="1"):
    """A session's intra-op thread count and allow_spinning as shown in tables: "?" where ortprof
    did not see the session's options, never the default presented as the current value."""
    config = options.get("config") or {}
    threads = options.get("intra_op_num_threads")
    spinning = config.get("session.intra_op.allow_spinning")
    return (str(threads) if threads is not None else "?",
            spinning if spinning is not None else (spinning_default if options_known else "?"))


def _sessions(report, console):
    sessions = report.sessions
    if not sessions:
        return
    sources = ", ".join(dict.fromkeys(SESSION_SOURCES.get(s.source, s.source) for s in sessions))
    table = Table(title=f"Inference latency (run() timed by {sources})", title_justify="left")
    for column in ("session", "model", "runs", "rate/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "p99/p50", "threads", "spinning"):
        table.add_column(column, justify="right" if column not in ("model",) else "left")
    for s in sessions:
        options = s.options or {}      # the session's options as the hook wrote them: plain JSON
        table.add_row(str(s.session), os.path.basename(s.model or "")[-40:], str(s.runs), _num(s.rate_per_s),
                      _num(s.p50_ms), _num(s.p95_ms), _num(s.p99_ms), _num(s.max_ms),
                      _num(s.variance_p99_p50), *threads_and_spinning(options, s.options_known))
    console.print(table)
    models = sorted({s.model for s in sessions if s.model and not s.model.startswith("<")})
    for model in models:
        console.print(Text(f"model-side checks (fusions, initializer inputs, layout): ortprof lint {model}", style="dim"))


STATE_LABELS = (("on_cpu", "on-CPU"), ("runnable", "runnable"), ("throttled", "throttled"), ("blocked", "blocked"),
                ("other", "other"))
SECTIONS_UNSEEN = {"spinning": "parallel sections unknown: the workers spin, the scheduler cannot see them",
                   "unknown": "parallel sections unknown: the session's workers are not known",
                   "no-pool": "no pool (one thread): no parallel sections"}


def _group_line(name, group):
    states = ", ".join(f"{label} {group.states_ms.get(state, 0.0):.2f}" for state, label in STATE_LABELS
                       if group.states_ms.get(state, 0.0) >= 0.005 or state == "on_cpu")
    line = f"  {name:<8}{group.run_ms:7.2f} ms ({group.runs} runs) = {states}"
    workers = group.workers_ms or {}
    if workers.get("runnable", 0) >= 0.005 or workers.get("throttled", 0) >= 0.005:
        line += f"; workers waited {workers.get('runnable', 0.0):.2f} runnable, {workers.get('throttled', 0.0):.2f} throttled"
    if group.top_holder is not None:
        from ..signals.sched.breakdown import holder_name
        shown = [h for h in [group.top_holder] + [h for h in group.held_by if h.comm != group.top_holder.comm][:1]
                 if h.ms >= 0.005]       # less than the figures' precision: noise
        if shown:
            line += "; CPU held by " + ", ".join(f"{holder_name(h)} {h.ms:.2f}" for h in shown)
    if group.wakeup is not None:
        line += (f"; {group.wakeup.per_run:.1f} wake-ups/run of {group.wakeup.mean_us:.0f} us "
                 f"(p95 {group.wakeup.p95_us:.0f})")
    if group.straggler_ms:
        line += f"; stragglers {group.straggler_ms:.2f}"
    return line


def _slow_runs(report, console):
    """Why slow runs were slow (sessions[].latency_breakdown): typical against slow runs, in ms per run."""
    explained = [s for s in report.sessions if s.latency_breakdown is not None]
    if not explained:
        return
    console.print("[bold]Slow runs explained[/] (scheduler states of the caller, ms per run)")
    for session in explained:
        breakdown = session.latency_breakdown
        model = os.path.basename(session.model or "")
        console.print(f"session {session.session}" + (f" ({model})" if model else ""))
        for name, group in (("typical", breakdown.typical), ("slow", breakdown.slow)):
            if group is not None:
                console.print(Text(_group_line(name, group)), overflow="fold")
        unseen = SECTIONS_UNSEEN.get(breakdown.slow.sections) if breakdown.slow else None
        if unseen:
            console.print(Text(f"  {unseen}", style="dim"))
        step = breakdown.step
        if breakdown.cause is not None and not (step is not None and step.cause.id == breakdown.cause.id):
            style = "dim" if breakdown.cause.id in ("none", "unknown") else "bold"
            console.print(Text.assemble("  cause: ", (breakdown.cause.id, style), f": {breakdown.cause.detail}"),
                          overflow="fold")
        if step is not None:
            console.print(Text.assemble(f"  step at {step.at_s:.1f} s: {step.before.run_ms:.2f} ms before, "
                                        f"{step.after.run_ms:.2f} ms after: ", (step.cause.id, "bold"),
                                        f": {step.cause.detail}"), overflow="fold")
        for note in breakdown.notes:
            console.print(Text(f"  note: {note}", style="yellow"))


def _pool_workers(report, console):
    workers = report.pool_workers or []
    if not workers:
        return
    table = Table(title="Pool workers (tied to a session by its creation, ORT's profile, or inferred from what ran "
                  "together)", title_justify="left", box=None)
    for column in ("tid", "session", "pool", "role", "CPU %", "spin %", "evidence"):
        table.add_column(column, justify="right" if column in ("tid", "session", "CPU %", "spin %") else "left")
    for worker in workers:
        table.add_row(str(worker.tid), str(worker.session), worker.pool, worker.role,
                      _pct(worker.cpu_pct), _pct(worker.spin_pct),
                      worker.evidence + (" (inferred)" if worker.evidence == RUNS_TOGETHER else ""))
    console.print(table)


def _operator_table(title, rows, by_node, sessions):
    table = Table(title=title, title_justify="left")
    columns = (["session"] if sessions > 1 else []) + (["node", "op"] if by_node else ["op", "provider"]) + [
        "calls", "ms/inference", "% of run()", "mean us", "parallel %", "workers", "CPU %", "spin+sync %"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("node", "op", "provider") else "right")
    for row in rows:
        cells = ([str(row.session)] if sessions > 1 else []) + (
            [row.node, row.op] if by_node else [row.op, row.provider.replace("ExecutionProvider", "")])
        table.add_row(*cells, str(row.calls), _num(row.ms_per_inference), _pct(row.run_share_pct),
                      f"{row.mean_us:.0f}", _pct(row.parallel_calls_pct), _num(row.workers_mean),
                      _pct(row.cpu_pct), _pct(row.spin_sync_pct))
    return table


def _operators(report, console, top):
    operators = report.operators
    if operators is None:
        return
    sessions = len({row.session for row in operators.ops})
    share = operators.node_share_pct
    title = (f"Hot operators (ORT's profile: {operators.node_runs} node runs, {operators.inferences} inferences"
             + (f"; nodes are {share:.0f}% of run() time" if share is not None else "") + ")")
    if operators.ops:
        console.print(_operator_table(title, operators.ops[:top], False, sessions))
        console.print(_operator_table("Top nodes", operators.nodes[:top], True, sessions))
    _parallel_sections(operators.parallel, console)
    if operators.between_runs_spin_sync_pct is not None:
        console.print(f"spin+sync between run() calls (after a run's last node): "
                      f"{operators.between_runs_spin_sync_pct:.1f}% of a core")
    alignment = operators.alignment
    if alignment is not None and alignment.runs_matched:
        console.print(Text(f"clock join: {alignment.runs_matched} runs matched; ORT's model_run starts "
                           f"{alignment.start_lead_us_p50:.0f} us after the hook's run() and ends "
                           f"{alignment.end_lag_us_p50:.0f} us before it (offset error <= "
                           f"{alignment.error_bound_us:.0f} us)", style="dim"))
    for note in operators.notes:
        console.print(f"[yellow]note:[/] {note}")


def _parallel_sections(parallel, console):
    if parallel is None or not parallel.node_runs:
        return
    line = (f"parallel sections: {parallel.node_runs} node runs used the intra-op pool"
            + (f" ({parallel.per_inference:.0f} per inference)" if parallel.per_inference else "")
            + f"; {_pct(parallel.short_share_pct)}% under {parallel.threshold_us:.0f} us per section; "
            f"no worker took part in {_pct(parallel.no_worker_pct)}%")
    if parallel.short_spin_sync_pct is not None:
        line += f"; spin+sync around the short ones {parallel.short_spin_sync_pct:.1f}% of a core"
    console.print(line)


def _labels(report):
    """function -> op-type label, from ORT's profile (runs recorded with --ort-profile)."""
    frames = report.operators.frames if report.operators is not None else []
    return {row.function: row.ops for row in frames}


def _labelled(name, labels):
    return f"{name} [{labels[name]}]" if name in labels else name


def _num(value):
    return "-" if value is None else f"{value:.2f}"


def _futex(report, console, top):
    futex = report.futex
    if not futex.recorded:
        return
    per_inf = futex.calls_per_inference
    how = {"bpftrace": "counted in BPF", "perf-tracepoints": "every call traced by perf"}.get(futex.method)
    if how and futex.stacks_sampled and (futex.stack_sample_period or 1) > 1:
        how += f"; stacks of 1 call in {futex.stack_sample_period}"
    console.print(f"[bold]futex[/]: {futex.calls} calls, {futex.calls_per_s:.0f}/s, "
                  f"{futex.time_ms_per_s:.1f} ms/s inside"
                  + (f", {per_inf:.1f} per inference" if per_inf is not None else "")
                  + (f" ({how})" if how else ""))
    table = Table(box=None, pad_edge=False, show_header=True)
    for column in ("tid", "role", "calls/s", "waits", "wakes", "ms/s", "per inference"):
        table.add_column(column, justify="right")
    for row in futex.threads[:top]:
        table.add_row(str(row.tid), row.role, f"{row.calls_per_s:.1f}", str(row.waits), str(row.wakes),
                      f"{row.time_ms_per_s:.1f}", _num(row.calls_per_inference))
    console.print(table)
    for item in futex.top_stacks[:3]:
        console.print(Text(f"  {item.calls:>6}  {item.stack}", style="dim"), overflow="ellipsis", no_wrap=True)


def _hot_paths(report, console, top):
    paths = report.hot_paths
    if not paths:
        return
    labels = _labels(report)
    table = Table(title="Hot call paths (leaf last)", title_justify="left", show_lines=False)
    table.add_column("CPU %", justify="right")
    table.add_column("role")
    table.add_column("category")
    table.add_column("path", overflow="fold")
    for path in paths[:top]:
        frames = path.stack.split(";")
        shown = " > ".join(frames[-4:-1] + [_labelled(frames[-1], labels)])
        table.add_row(_pct(path.cpu_pct), path.role, CATEGORY_LABELS.get(path.category, path.category),
                      ("… > " if len(frames) > 4 else "") + shown)
    console.print(table)
    functions = Table(title="Top functions (self)", title_justify="left", box=None)
    functions.add_column("CPU %", justify="right")
    functions.add_column("function", overflow="fold")
    for item in report.top_functions.self[:top]:
        functions.add_row(_pct(item.cpu_pct), _labelled(item.function, labels))
    console.print(functions)
    spots = [spot for spot in report.hot_spots if spot.source]
    if spots:
        table = Table(title="Hot spots with source lines", title_justify="left", box=None)
        for column in ("CPU %", "function", "source"):
            table.add_column(column, justify="right" if column == "CPU %" else "left")
        for spot in spots[:top]:
            table.add_row(_pct(spot.cpu_pct), spot.function, spot.source)
        console.print(table)


def _findings(report, console):
    findings = report.findings
    if not findings:
        console.print("[green]No findings.[/]" if report.samples else
                      "[yellow]No findings; the CPU-category findings (spin-wait, caller-spin, futex) need perf samples.[/]")
        return
    for finding in findings:
        console.print(_finding_panel(finding, REMEDY_LEXERS.get(report.ort.client or "python", "python")))


# The language remedies are written in (analysis/remedies.py renders them for the profiled client).
REMEDY_LEXERS = {"python": "python", "native": "cpp", "csharp": "csharp", "java": "java", "node": "javascript"}


def _finding_panel(finding, lexer="python"):
    style = SEVERITY_STYLE.get(finding.severity, "")
    evidence = ", ".join(f"{k}={v}" for k, v in finding.evidence.items() if v is not None)
    parts = [Text(finding.title, style="bold"), Text(f"evidence: {evidence}", style="dim")]
    if finding.explanation:
        parts.append(Text(finding.explanation))
    if finding.remedy:
        lexer = "bash" if finding.remedy.startswith("ortprof") else lexer
        parts.append(Syntax(finding.remedy, lexer, theme="ansi_dark", background_color="default"))
    if finding.tradeoff:
        parts.append(Text("trade-off: " + finding.tradeoff, style="italic"))
    return Panel(Group(*parts), title=f"[{style}]{finding.severity.upper()}[/] {finding.id}",
                 title_align="left", border_style=style)
