"""Terminal rendering of a LintReport with rich."""
import json

from rich.markup import escape
from rich.table import Table

from .placement import CPU_PROVIDER

SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}
TOP_OPS = 4
EVIDENCE_ITEMS = 5  # list entries shown per evidence field (--json has them all)


def _size(nbytes):
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GB"


def _count(n):
    if n >= 1e9:
        return f"{n / 1e9:.2f} G"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return str(n)


def short_op(op):
    """ORT's own domains shortened for the table: "com.microsoft:FusedConv" -> "ms:FusedConv"."""
    if op.startswith("com.microsoft."):
        return op[len("com.microsoft."):]
    if op.startswith("com.microsoft:"):
        return "ms:" + op[len("com.microsoft:"):]
    return op


def _shape(value):
    if value["shape"] is None:
        return f"{value['type']}[?]"
    return f"{value['type']}[{','.join(str(d) for d in value['shape'])}]"


def _render_model(console, facts):
    opsets = ", ".join(f"{domain} {version}" for domain, version in facts["opsets"].items())
    console.print(f"[bold]{escape(facts['path'])}[/bold]  IR {facts['ir_version']}, opsets {escape(opsets)}"
                  + (f", producer {escape(facts['producer'])}" if facts["producer"] else ""))
    console.print(f"  {facts['nodes']} nodes, {_count(facts['parameters'])} parameters "
                  f"({_size(facts['parameter_bytes'])}) in {facts['initializers']} initializers")
    inputs = ", ".join(f"{escape(i['name'])} {escape(_shape(i))}" for i in facts["inputs"]) or "none"
    console.print(f"  inputs: {inputs}")
    if facts["dynamic_inputs"]:
        console.print(f"  dynamic axes on: {escape(', '.join(facts['dynamic_inputs']))}")
    ext = facts["external_data"]
    if ext["tensors"]:
        files = ", ".join(f"{escape(name)} ({_size(size)})" for name, size in ext["files"].items())
        console.print(f"  external data: {ext['tensors']} tensors in {files}")
    else:
        console.print("  external data: none")
    console.print(f"  custom domains: {escape(', '.join(facts['custom_domains'])) or 'none'}"
                  + (f"; {facts['local_functions']} local functions" if facts["local_functions"] else ""))


def _op_changes(before, after):
    ops = sorted(set(before) | set(after), key=lambda op: (-(abs(after.get(op, 0) - before.get(op, 0))), op))
    changes = []
    for op in ops:
        delta = after.get(op, 0) - before.get(op, 0)
        if delta:
            changes.append(f"{short_op(op)} {delta:+d}")
    return changes


def _render_levels(console, levels, ort_version):
    table = Table(title=f"Graph optimization (onnxruntime {ort_version}, CPUExecutionProvider)",
                  title_justify="left")
    table.add_column("level")
    table.add_column("nodes", justify="right")
    table.add_column("Transpose", justify="right")
    table.add_column("unfused", justify="right")
    table.add_column("top ops")
    for level, stats in levels.items():
        top = ", ".join(f"{short_op(op)} {n}" for op, n in list(stats["ops"].items())[:TOP_OPS])
        table.add_row(level, str(stats["nodes"]), str(stats["layout"]["transposes"]),
                      str(sum(stats["unfused_patterns"].values())), escape(top))
    console.print(table)
    changes = _op_changes(levels["disabled"]["ops"], levels["all"]["ops"])
    console.print("  disabled -> all: " + (escape(", ".join(changes)) if changes else "no change"))


def _render_placement(console, report):
    console.print()
    if report.get("skipped"):
        console.print(f"[bold]Execution providers[/bold]: skipped: {escape(report['skipped'])}")
        return
    console.print(f"[bold]Execution providers[/bold] (requested: {', '.join(report['requested'])}; "
                  f"session uses: {', '.join(report.get('session_providers') or [])})")
    table = Table()
    table.add_column("provider")
    table.add_column("nodes", justify="right")
    for provider, count in report["node_counts"].items():
        table.add_row(provider, str(count))
    console.print(table)
    cpu_nodes = report["nodes"].get(CPU_PROVIDER, [])
    preferred = [p for p in report["requested"] if p != CPU_PROVIDER]
    if cpu_nodes and preferred:
        shown = ", ".join(f"{n['op']} ({n['name']})" for n in cpu_nodes[:12])
        more = f" and {len(cpu_nodes) - 12} more" if len(cpu_nodes) > 12 else ""
        console.print(f"  on CPU: {escape(shown)}{more}")
    console.print(f"  Memcpy nodes: {report['memcpy_nodes']}")


def _render_fix(console, fix):
    console.print()
    if not fix["written"]:
        console.print(f"[bold]Fix[/bold]: {escape(fix['path'])} not written: {escape(fix['reason'])}")
        return
    data = f" (+ {escape(fix['external_data'])})" if fix["external_data"] else ""
    console.print(f"[bold]Fix[/bold]: wrote {escape(fix['path'])}{data} without {len(fix['removed_inputs'])} "
                  f"initializer inputs; nodes after ORT optimization (level all): "
                  f"{fix['nodes_at_all_before']} before, {fix['nodes_at_all_after']} after")


def _shortened(value):
    if isinstance(value, list) and len(value) > EVIDENCE_ITEMS:
        return value[:EVIDENCE_ITEMS] + ["..."]
    if isinstance(value, dict):
        return {key: _shortened(item) for key, item in value.items()}
    return value


def render_finding(console, finding):
    style = SEVERITY_STYLE[finding.severity]
    console.print(f"[{style}]{finding.severity.upper()}[/{style}] [bold]{finding.id}[/bold]: {escape(finding.title)}")
    if finding.evidence:
        console.print(f"  evidence: {escape(json.dumps(_shortened(finding.evidence), separators=(', ', ': ')))}",
                      overflow="fold")
    if finding.remedy:
        console.print(f"  remedy:   {escape(finding.remedy)}", overflow="fold")
    if finding.tradeoff:
        console.print(f"  tradeoff: {escape(finding.tradeoff)}")
    if finding.explanation:
        console.print(f"  why:      {escape(finding.explanation)}")


def render_report(console, report):
    _render_model(console, report.model)
    console.print()
    _render_levels(console, report.levels, report.onnxruntime)
    if report.placement is not None:
        _render_placement(console, report.placement)
    if report.fix is not None:
        _render_fix(console, report.fix)
    console.print()
    if not report.findings:
        console.print("[green]No findings.[/green]")
    for finding in report.findings:
        render_finding(console, finding)
