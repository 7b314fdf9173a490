"""A self-contained HTML page of the report: no scripts, no network, one file to attach to a ticket."""
import html

from ..model.report import CATEGORIES
from .terminal import CATEGORY_LABELS

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}code,pre{font:12px ui-monospace,monospace}
pre{background:#f7f7f7;padding:.6em;overflow:auto}.bar{display:inline-block;height:10px}
.critical{border-left:6px solid #c62828}.warning{border-left:6px solid #f9a825}.info{border-left:6px solid #1976d2}
.finding{padding:.3em 1em;margin:1em 0;background:#fcfcfc}.dim{color:#777}
"""
_COLORS = {"compute": "#2e7d32", "spin": "#c62828", "caller_spin": "#ef6c00", "sync": "#6a1b9a",
           "kernel": "#455a64", "python": "#1565c0", "other": "#9e9e9e"}


def _e(value):
    return html.escape("" if value is None else str(value))


def _num(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def render_html(report):
    parts = [f"<!doctype html><meta charset=utf-8><title>ortprof report</title><style>{_STYLE}</style>",
             f"<h1>ortprof report</h1><p class=dim>{_e(report.get('run'))} · window {report['window_seconds']:.1f} s"]
    ort = report.get("ort") or {}
    if ort.get("ort_version"):
        parts.append(f" · ORT {_e(ort['ort_version'])} ({_e(ort.get('symbol_status'))})")
    parts.append("</p>")
    totals = report.get("totals") or {}
    parts.append(f"<p>Process CPU: <b>{_num(totals.get('cpu_pct'))}%</b> of one core from perf samples, "
                 f"{_num(totals.get('proc_cpu_pct'))}% from /proc.</p>")
    parts.append(_findings(report))
    parts.append(_threads(report))
    parts.append(_sessions(report))
    parts.append(_hot_paths(report))
    for note in report.get("notes", []):
        parts.append(f"<p class=dim>note: {_e(note)}</p>")
    return "".join(parts)


def _findings(report):
    out = ["<h2>Findings</h2>"]
    for f in report.get("findings", []) or []:
        evidence = ", ".join(f"{_e(k)}={_e(v)}" for k, v in f.get("evidence", {}).items())
        out.append(f"<div class='finding {_e(f['severity'])}'><h3>{_e(f['severity']).upper()} {_e(f['id'])}: "
                   f"{_e(f['title'])}</h3><p class=dim>{evidence}</p><p>{_e(f.get('explanation'))}</p>"
                   f"<pre>{_e(f.get('remedy'))}</pre><p><i>trade-off: {_e(f.get('tradeoff'))}</i></p></div>")
    if len(out) == 1:
        out.append("<p>No findings.</p>")
    return "".join(out)


def _threads(report):
    rows = []
    for t in report.get("threads", []):
        categories = t.get("categories") or {}
        bar = "".join(f"<span class=bar title='{CATEGORY_LABELS[c]} {categories.get(c, 0):.1f}%' "
                      f"style='width:{3 * categories.get(c, 0):.0f}px;background:{_COLORS[c]}'></span>"
                      for c in CATEGORIES if categories.get(c))
        rows.append(f"<tr><td>{t['tid']}</td><td class=l>{_e(t['role'])}</td><td>{_num(t.get('cpu_pct'))}</td>"
                    f"<td>{_num(t.get('proc_cpu_pct'))}</td>"
                    + "".join(f"<td>{_num(categories.get(c))}</td>" for c in CATEGORIES)
                    + f"<td class=l>{bar}</td></tr>")
    head = "".join(f"<th>{CATEGORY_LABELS[c]}</th>" for c in CATEGORIES)
    return (f"<h2>CPU by thread (% of one core)</h2><table><tr><th>tid</th><th class=l>role</th><th>CPU</th>"
            f"<th>/proc</th>{head}<th class=l></th></tr>{''.join(rows)}</table>")


def _sessions(report):
    rows = "".join(f"<tr><td>{s['session']}</td><td class=l>{_e(s.get('model'))}</td><td>{s['runs']}</td>"
                   f"<td>{_num(s.get('p50_ms'), 2)}</td><td>{_num(s.get('p95_ms'), 2)}</td>"
                   f"<td>{_num(s.get('p99_ms'), 2)}</td><td>{_num(s.get('max_ms'), 2)}</td></tr>"
                   for s in report.get("sessions", []))
    if not rows:
        return ""
    return ("<h2>Inference latency</h2><table><tr><th>session</th><th class=l>model</th><th>runs</th>"
            f"<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th></tr>{rows}</table>")


def _hot_paths(report):
    paths = report.get("hot_paths") or []
    rows = "".join(f"<tr><td>{_num(p['cpu_pct'])}</td><td class=l>{_e(p['role'])}</td>"
                   f"<td class=l>{_e(CATEGORY_LABELS.get(p['category'], p['category']))}</td>"
                   f"<td class=l><code>{_e(' > '.join(p['stack'].split(';')[-6:]))}</code></td></tr>" for p in paths)
    if not rows:
        return ""
    return ("<h2>Hot call paths</h2><table><tr><th>CPU %</th><th class=l>role</th><th class=l>category</th>"
            f"<th class=l>path (last 6 frames)</th></tr>{rows}</table>")
