"""The diff as one self-contained HTML page: the tables of `ortprof diff` and a differential
flame graph (html_assets/diff.js) drawn from data embedded as JSON.

The flame graph has the shape of AFTER: one merged call tree (roots: thread roles, since
thread ids differ between runs), each frame's width its AFTER CPU per inference, and
beside it the BEFORE value of the same call path. diff.js colours a frame red where the
path grew and blue where it shrank. Frames under PRUNE_FRACTION of AFTER's total are left
out (their time stays in their parent); paths that vanished in AFTER are listed below.
"""
import html

from ..diff.folded import stack_weights
from ..diff.terminal import breakdown_rows, row_label
from .html import _asset, embed_json

PRUNE_FRACTION = 0.0005
VANISHED_ROWS = 12


def _e(value):
    return html.escape("" if value is None else str(value))


def _num(value, digits=2, sign=False):
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


class _Node:
    __slots__ = ("name", "before", "after", "children")

    def __init__(self, name):
        self.name = name
        self.before = 0.0
        self.after = 0.0
        self.children = {}


def flame_tree(before, after, per_inference):
    """Merged call tree of both sides; weights in CPU-ms per inference (else % of one core)."""
    root = _Node("all threads")
    for side, attribute in ((before, "before"), (after, "after")):
        divisor = (1e6 * side.inferences) if per_inference else (1e7 * (side.window_seconds or 1))
        for stack, ns in stack_weights(side.profile).items():
            value = ns / divisor
            node = root
            setattr(node, attribute, getattr(node, attribute) + value)
            for name in stack.split(";"):
                child = node.children.get(name)
                if child is None:
                    child = node.children[name] = _Node(name)
                setattr(child, attribute, getattr(child, attribute) + value)
                node = child
    return root


def _encode(node, limit, names):
    """[name index, before, after, children] of the frames AFTER has (at least `limit`)."""
    children = [_encode(child, limit, names) for child in sorted(node.children.values(), key=lambda c: -c.after)
                if child.after >= limit]
    return [names.setdefault(node.name, len(names)), round(node.before, 4), round(node.after, 4), children]


def vanished_paths(root, limit):
    """(path, before) of the heaviest call paths AFTER does not draw (gone or under the limit)."""
    found = []

    def walk(node, path):
        for child in node.children.values():
            here = path + [child.name]
            if child.after < limit:
                if child.before >= limit:
                    found.append((";".join(here), child.before))
            else:
                walk(child, here)
    walk(root, [])
    return sorted(found, key=lambda item: -item[1])[:VANISHED_ROWS]


def flame_data(diff, before, after):
    if before.profile is None or after.profile is None or not (before.profile.has_samples and after.profile.has_samples):
        return None
    per_inference = diff["per_inference"]
    root = flame_tree(before, after, per_inference)
    limit = max(root.after, root.before) * PRUNE_FRACTION
    names = {}
    tree = _encode(root, limit, names)
    return {"names": list(names), "tree": tree,
            "unit": "CPU-ms per inference" if per_inference else "% of one core",
            "vanished": [[path, round(value, 4)] for path, value in vanished_paths(root, limit)]}


# ---------------------------------------------------------------- static HTML

def _quantity_cells(q, digits=2):
    interval = "-" if not q.get("interval") else f"[{q['interval'][0]:+.{digits}f}, {q['interval'][1]:+.{digits}f}]"
    ratio = "-" if q.get("ratio") is None else f"{q['ratio']:.2f}x"
    verdict = q.get("verdict") or "-"
    return (f"<td>{_num(q['before'], digits)}</td><td>{_num(q['after'], digits)}</td>"
            f"<td>{_num(q['delta'], digits, True)}</td><td>{ratio}</td><td>{interval}</td>"
            f"<td class='l verdict' data-verdict='{_e(verdict)}'>{_e(verdict)}</td>")


QUANTITY_HEAD = ("<th>before</th><th>after</th><th>delta</th><th>ratio</th><th>95% interval</th>"
                 "<th class=l>verdict</th>")


def _changes(diff):
    rows = "".join(f"<tr><td class=l>{_e(c['what'])}</td><td class=l><code>{_e(c['before'])}</code></td>"
                   f"<td class=l><code>{_e(c['after'])}</code></td></tr>" for c in diff["changes"])
    body = (f"<table id=changes><tr><th class=l></th><th class=l>BEFORE</th><th class=l>AFTER</th></tr>{rows}</table>"
            if rows else "<p>Nothing the runs record differs (settings, ORT, quota, command, machine).</p>")
    return f"<section><h2>What changed</h2>{body}</section>"


def _cpu(diff):
    if not diff["cpu"]:
        return ""
    key = "ms_per_inference" if diff["per_inference"] else "pct"
    unit = "CPU-ms per inference" if diff["per_inference"] else "% of one core"
    rows = "".join(f"<tr data-row='{_e(r['group'])}:{_e(r['name'])}'><td class=l>{_e(row_label(r))}</td>"
                   f"<td>{_num(r['pct']['before'], 1)}</td><td>{_num(r['pct']['after'], 1)}</td>"
                   + _quantity_cells(r[key]) + "</tr>"
                   for r in diff["cpu"] if r["pct"]["before"] or r["pct"]["after"])
    return (f"<section><h2>CPU ({unit}; % of one core beside it)</h2><table id=cpu><tr><th class=l></th>"
            f"<th>before %</th><th>after %</th>{QUANTITY_HEAD}</tr>{rows}</table></section>")


def _latency(diff):
    parts = []
    for row in diff["latency"]:
        rows = "".join(f"<tr><td class=l>{name.replace('_ms', '')} ms</td>{_quantity_cells(row[name])}</tr>"
                       for name in ("p50_ms", "p95_ms", "p99_ms"))
        rows += f"<tr><td class=l>runs</td>{_quantity_cells(row['runs'], 0)}</tr>"
        parts.append(f"<h3>session {_e(row['session'])} · {_e((row.get('model') or '').rsplit('/', 1)[-1])}</h3>"
                     f"<table class=latency><tr><th class=l></th>{QUANTITY_HEAD}</tr>{rows}</table>")
    for row in diff.get("latency_breakdown") or []:
        rows = "".join(f"<tr><td class=l>{_e(label)}</td>{_quantity_cells(q)}</tr>" for label, q in breakdown_rows(row))
        cause = row["cause"]
        because = (f"<p>slow runs' cause: <b>{_e(cause['before'] or '-')}</b> → <b>{_e(cause['after'] or '-')}</b></p>"
                   if cause["before"] or cause["after"] else "")
        parts.append(f"<h3>latency breakdown, session {_e(row['session'])} (ms per run)</h3>{because}"
                     f"<table class=latency-breakdown data-session='{_e(row['session'])}'><tr><th class=l></th>"
                     f"{QUANTITY_HEAD}</tr>{rows}</table>")
    futex_rows = []
    if diff.get("futex"):
        f = diff["futex"]
        futex_rows += [(f"futex calls {f['unit']}", f["calls"]), (f"futex time ms {f['unit']}", f["time_ms"])]
    if diff.get("throttling"):
        futex_rows += [("throttled ms", diff["throttling"]["throttled_ms"])]
    if futex_rows:
        rows = "".join(f"<tr><td class=l>{_e(label)}</td>{_quantity_cells(q)}</tr>" for label, q in futex_rows)
        parts.append(f"<h3>futex and throttling</h3><table><tr><th class=l></th>{QUANTITY_HEAD}</tr>{rows}</table>")
    return "<section><h2>Latency, futex, throttling</h2>" + "".join(parts) + "</section>" if parts else ""


def _findings(diff):
    items = "".join(f"<li class='finding-{state}' data-finding='{_e(f['id'])}' data-state={state}><b>{state}</b> "
                    f"{_e(f['id'])} ({_e(f['severity'])}): {_e(f['title'])}</li>"
                    for state in ("resolved", "new", "persisting") for f in diff["findings"][state])
    return f"<section><h2>Findings</h2><ul id=findings>{items or '<li>none on either side</li>'}</ul></section>"


def _movers(diff):
    parts = []
    for title, section in (("Hot paths", diff["hot_paths"]), ("Functions (self time)", diff["functions"])):
        unit = "CPU-ms per inference" if section["unit"] == "ms_per_inference" else "% of one core"
        for direction in ("grew", "shrank"):
            rows = "".join(f"<tr><td>{_num(r['before'])}</td><td>{_num(r['after'])}</td>"
                           f"<td>{_num(r['delta'], 2, True)}</td><td class=l>{_e(r['verdict'])}</td>"
                           f"<td class=l><code>{_e(' > '.join(r['name'].split(';')[-5:]))}</code></td></tr>"
                           for r in section[direction])
            if rows:
                parts.append(f"<h3>{title} that {direction} ({unit})</h3><table><tr><th>before</th><th>after</th>"
                             f"<th>delta</th><th class=l>verdict</th><th class=l>last frames</th></tr>{rows}</table>")
    return "<section><h2>What grew and shrank</h2>" + "".join(parts) + "</section>" if parts else ""


def _gates(diff):
    results = (diff.get("gates") or {}).get("results") or []
    if not results:
        return ""
    rows = "".join(f"<li data-holds={'1' if r['holds'] else '0'}><code>{_e(r['expression'])}</code>: "
                   f"<b>{'HOLDS' if r['holds'] else 'does not hold'}</b> · {_e(r['detail'])}</li>" for r in results)
    return ("<section><h2>Gates</h2><p class=dim>Only significant changes trip a gate: outside the 95% interval "
            f"and above the noise floor.</p><ul id=gates>{rows}</ul></section>")


def render_diff_html(diff, before, after):
    data = {"flame": flame_data(diff, before, after)}
    header = (f"<header><h1>ortprof diff</h1><p class=dim>BEFORE {_e(diff['before']['source'])} "
              f"({diff['before']['inferences']} inferences in {diff['before']['window_seconds']:.1f} s) → "
              f"AFTER {_e(diff['after']['source'])} ({diff['after']['inferences']} inferences in "
              f"{diff['after']['window_seconds']:.1f} s)</p></header>")
    lines = "".join(f"<p class=warning>warning: {_e(w)}</p>" for w in diff["warnings"])
    lines += "".join(f"<p class=dim>not compared: {_e(k)}: {_e(v)}</p>" for k, v in diff["not_compared"].items())
    lines += "".join(f"<p class=dim>note: {_e(n)}</p>" for n in diff["notes"])
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>ortprof diff</title>"
            f"<meta name=viewport content='width=device-width'><style>{_asset('report.css')}"
            ".verdict[data-verdict=up],.verdict[data-verdict=down]{font-weight:bold}"
            ".verdict[data-verdict='within noise']{color:#777}.warning{border-left:6px solid #f9a825;padding-left:.5em}"
            "</style></head><body>" + header + lines + _changes(diff) +
            "<section id=flame-section><h2>Differential flame graph</h2><div id=diff-flame-app></div></section>"
            + _cpu(diff) + _latency(diff) + _findings(diff) + _movers(diff) + _gates(diff) +
            "<p class=dim>Verdicts: up/down only outside the 95% bootstrap interval and above the noise floor; "
            "'within noise' is neither a win nor a loss.</p>"
            f"<div id=tooltip hidden></div><script type='application/json' id=ortprof-diff-data>{embed_json(data)}"
            f"</script><script>{_asset('diff.js')}</script></body></html>")
