"""The HTML report: one self-contained page (no network) to open in a browser or attach to a ticket.

The tables and findings are plain HTML written here; the flame graph, the
per-thread CPU timeline and the latency charts are drawn by html_assets/report.js
from data embedded as JSON. The data is reduced in Python first: one merged
call tree per view (whole process, each role, each thread) with the frames
below PRUNE_FRACTION of the view rolled into an "[others]" node, and CPU per
time bin per thread, so a long profile still gives a page of a few MB.
"""
import html
import json
from collections import Counter, defaultdict
from importlib import resources

from ..analysis.pipeline import stack_category
from ..model.report import CATEGORIES
from ..signals.sched.timeline import STATES
from .html_sched import STATE_LABELS, missing_reason, sched_lanes
from .terminal import CATEGORY_LABELS

COLORS = {"compute": "#2e7d32", "spin": "#c62828", "caller_spin": "#ef6c00", "sync": "#6a1b9a",
          "kernel": "#455a64", "python": "#1565c0", "other": "#9e9e9e"}
PRUNE_FRACTION = 0.001          # frames below 0.1% of their view go into "[others]"
OTHERS = "[others]"
TIMELINE_BINS = 800             # sampled-CPU bins across the window...
MIN_BIN_SECONDS = 0.01          # ...each at least 10 ms (2 samples at perf's default 199 Hz)
_CATEGORY_INDEX = {name: i for i, name in enumerate(CATEGORIES)}


def _e(value):
    return html.escape("" if value is None else str(value))


def _num(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def _asset(name):
    return resources.files(__package__).joinpath("html_assets", name).read_text(encoding="utf-8")


def embed_json(data):
    """JSON safe inside <script type="application/json">: no '<' can close the element."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(report, profile=None, sched=None):
    """The page of `report` (the report JSON); `profile` (model.Profile) feeds the charts, `sched`
    (the sched signal's SchedTimeline) the thread-state lanes and the per-run breakdowns."""
    data = page_data(report, profile, sched)
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>ortprof report</title>"
             f"<meta name=viewport content='width=device-width'><style>{_asset('report.css')}</style></head><body>",
             _header(report), _findings(report),
             "<section id=flame-section><h2>Where the CPU goes</h2><div id=flame-app></div></section>",
             "<section id=timeline-section><h2>CPU over time, per thread</h2><div id=timeline-app></div></section>",
             "<section id=latency-section><h2>Inference latency</h2>", _sessions(report),
             "<div id=latency-app></div></section>",
             _threads(report), _hot_paths(report)]
    for note in report.get("notes", []):
        parts.append(f"<p class=dim>note: {_e(note)}</p>")
    parts.append(f"<div id=tooltip hidden></div>"
                 f"<script type='application/json' id=ortprof-data>{embed_json(data)}</script>"
                 f"<script>{_asset('report.js')}</script></body></html>")
    return "".join(parts)


# ---------------------------------------------------------------- data for the charts

def page_data(report, profile, sched=None):
    """Everything report.js draws: categories, flame views, timeline lanes, latency series."""
    runs_total = sum(s.get("runs") or 0 for s in report.get("sessions", []))
    data = {"categories": [{"id": c, "label": CATEGORY_LABELS[c], "color": COLORS[c]} for c in CATEGORIES],
            "window_seconds": report.get("window_seconds") or 0, "runs": runs_total,
            "empty": report.get("empty_sections") or {}, "flame": None, "timeline": None, "latency": []}
    if profile is None:
        return data
    roles = {row["tid"]: row["role"] for row in report.get("threads", [])}
    origin = profile.span()[0]
    if profile.has_samples:
        data["flame"] = flame_views(profile, roles)
    data["timeline"] = timeline(profile, report, roles, origin, sched)
    data["latency"] = latency_series(profile, report, origin)
    return data


class _Node:
    __slots__ = ("key", "us", "samples", "by_category", "children")

    def __init__(self, key):
        self.key = key                              # (name, mapping id) or a label
        self.us = 0
        self.samples = 0
        self.by_category = [0] * len(CATEGORIES)
        self.children = {}

    def add(self, us, samples, category):
        self.us += us
        self.samples += samples
        self.by_category[category] += us

    def add_weights(self, other):
        self.us += other.us
        self.samples += other.samples
        self.by_category = [a + b for a, b in zip(self.by_category, other.by_category)]

    def merge(self, other):
        """Add `other`'s weights and subtree into this node."""
        self.add_weights(other)
        for key, child in other.children.items():
            mine = self.children.get(key)
            if mine is None:
                mine = self.children[key] = _Node(key)
            mine.merge(child)


def _thread_tree(profile, thread, label):
    """Call tree of one thread; frames merged by (name, DSO), as a flame graph shows them."""
    root = _Node(label)
    frames = profile.frames
    for stack_id, ns in thread.ns_by_stack.items():
        us = ns // 1000
        samples = thread.count_by_stack.get(stack_id, 0)
        category = _CATEGORY_INDEX[stack_category(profile, stack_id, thread.role)]
        node = root
        node.add(us, samples, category)
        for frame_id in profile.stacks[stack_id].frames:
            frame = frames[frame_id]
            key = (frame.display_name, frame.mapping)
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Node(key)
            child.add(us, samples, category)
            node = child
    return root


def _intern(table, text):
    """Index of `text` in `table` (a dict kept in insertion order: the JSON lists each string once)."""
    return table.setdefault(text, len(table))


def _encode(node, limit, names, dsos, mappings):
    """[name, dso, µs, samples, category, children] with the children under `limit` in one "[others]"."""
    if isinstance(node.key, tuple):
        name, dso = _intern(names, node.key[0]), _intern(dsos, mappings[node.key[1]].path)
    else:
        name, dso = _intern(names, node.key), _intern(dsos, "")
    kept, others = [], None
    for child in sorted(node.children.values(), key=lambda c: -c.us):
        if child.us >= limit:
            kept.append(_encode(child, limit, names, dsos, mappings))
        else:
            if others is None:
                others = _Node(OTHERS)
            others.add_weights(child)
    if others is not None and others.us > 0:
        kept.append([_intern(names, OTHERS), _intern(dsos, ""), others.us, others.samples, _dominant(others), []])
    return [name, dso, node.us, node.samples, _dominant(node), kept]


def _dominant(node):
    """The category carrying most of the node's weight: spin loops and their callers are red."""
    return max(range(len(CATEGORIES)), key=lambda i: node.by_category[i])


def flame_views(profile, roles):
    """{"names", "dsos", "views": [{id, label, tree}]}: the whole process (first level: roles),
    each role and each thread, busiest first."""
    by_tid = {}
    for tid, thread in profile.threads.items():
        if thread.ns_by_stack:
            by_tid[tid] = _thread_tree(profile, thread, f"{roles.get(tid, thread.role)} {tid}")
    role_trees = {}
    for tid, tree in by_tid.items():
        role = roles.get(tid, profile.threads[tid].role)
        if role not in role_trees:
            role_trees[role] = _Node(role)
        role_trees[role].merge(tree)
    everything = _Node("all threads")
    for role, tree in role_trees.items():
        everything.add_weights(tree)
        everything.children[role] = tree
    names, dsos = {}, {}
    views = [("all", "all threads", everything)]
    views += [(f"role:{role}", role, tree) for role, tree in sorted(role_trees.items(), key=lambda i: -i[1].us)]
    views += [(f"tid:{tid}", tree.key, tree) for tid, tree in sorted(by_tid.items(), key=lambda i: -i[1].us)]
    encoded = [{"id": view_id, "label": label,
                "tree": _encode(tree, max(1, tree.us * PRUNE_FRACTION), names, dsos, profile.mappings)}
               for view_id, label, tree in views]
    return {"names": list(names), "dsos": list(dsos), "views": encoded}


def timeline(profile, report, roles, origin, sched=None):
    """Lanes (threads with CPU, busiest first): /proc CPU % per interval, sampled CPU % per
    category per bin, every run() span with its caller's tid (and whether it was slow), and
    the callers' and pool workers' scheduler states (html_sched) when the run has them."""
    start, end = profile.span()
    seconds = max(end - start, 1e-3)
    bin_seconds = max(MIN_BIN_SECONDS, seconds / TIMELINE_BINS)
    bins = int(seconds / bin_seconds) + 1
    run_tids = {run.tid for run in profile.runs}
    order = [row["tid"] for row in report.get("threads", [])]
    states = sched_lanes(sched, report, profile.runs, origin, seconds, order) if sched is not None else None
    with_states = {int(tid) for tid in states["lanes"]} if states else set()
    lanes = []
    for row in report.get("threads", []):
        tid = row["tid"]
        if not ((row.get("cpu_pct") or 0) > 0 or (row.get("proc_cpu_pct") or 0) > 0 or tid in run_tids
                or tid in with_states):
            continue
        lane = {"tid": tid, "role": row["role"], "label": f"{row['role']} {tid}",
                "cpu_pct": row.get("cpu_pct"), "proc_cpu_pct": row.get("proc_cpu_pct"),
                "proc": _proc_intervals(profile.thread_cpu.get(tid) or [], origin), "sampled": {}}
        thread = profile.threads.get(tid)
        if thread is not None and thread.samples:
            lane["sampled"] = _sampled_bins(profile, thread, origin, bin_seconds, bins)
        lanes.append(lane)
    p95 = {s["session"]: s.get("p95_ms") for s in report.get("sessions", [])}
    runs = [[run.tid, run.session, round(run.start - origin, 4), round(run.seconds, 5),
             int(p95.get(run.session) is not None and run.seconds * 1000 >= p95[run.session])]
            for run in profile.runs]
    return {"seconds": round(seconds, 3), "bin_seconds": bin_seconds, "lanes": lanes, "runs": runs,
            "has_proc": any(lane["proc"]["t"] for lane in lanes),
            "has_samples": profile.has_samples, "sched": states,
            "sched_missing": None if states else missing_reason(report.get("empty_sections") or {})}



def _proc_intervals(points, origin):
    """{"t": [point times], "pct": [CPU % of a core between consecutive points]}."""
    times, pct = [], []
    for (t0, c0), (t1, c1) in zip(points, points[1:]):
        if t1 <= t0:
            continue
        if not times:
            times.append(round(t0 - origin, 3))
        times.append(round(t1 - origin, 3))
        pct.append(round(max(0.0, 100 * (c1 - c0) / (t1 - t0)), 1))
    return {"t": times, "pct": pct}


def _sampled_bins(profile, thread, origin, bin_seconds, bins):
    """{category: [CPU % of a core per bin]} from each sample's time and weight."""
    category_of = {}
    totals = defaultdict(lambda: [0] * bins)
    for t, stack_id, ns in zip(thread.times, thread.stack_ids, thread.weights_ns):
        index = int((t - origin) / bin_seconds)
        if not 0 <= index < bins:
            continue
        category = category_of.get(stack_id)
        if category is None:
            category = category_of[stack_id] = stack_category(profile, stack_id, thread.role)
        totals[category][index] += ns
    scale = 100 / (bin_seconds * 1e9)
    return {category: [round(ns * scale, 1) for ns in values] for category, values in totals.items()}


def latency_series(profile, report, origin):
    """Per session: each run()'s start (s from the window start) and ms, with the report's percentiles."""
    by_session = defaultdict(list)
    for index, run in enumerate(profile.runs):   # the index: the run in the timeline's runs, for its breakdown
        by_session[run.session].append((round(run.start - origin, 4), round(run.seconds * 1000, 3), index))
    series = []
    for session in report.get("sessions", []):
        points = sorted(by_session.get(session["session"], []))
        series.append({"session": session["session"], "model": session.get("model"),
                       "p50_ms": session.get("p50_ms"), "p95_ms": session.get("p95_ms"),
                       "p99_ms": session.get("p99_ms"), "runs": session.get("runs"),
                       "t": [p[0] for p in points], "ms": [p[1] for p in points], "run": [p[2] for p in points]})
    return series


# ---------------------------------------------------------------- static HTML

def _header(report):
    parts = [f"<header><h1>ortprof report</h1><p class=dim>{_e(report.get('run'))} · window "
             f"{report.get('window_seconds') or 0:.1f} s"]
    ort = report.get("ort") or {}
    if ort.get("ort_version"):
        parts.append(f" · ORT {_e(ort['ort_version'])} ({_e(ort.get('symbol_status'))})")
    if report.get("samples"):
        parts.append(f" · {report['samples']} perf samples")
    parts.append("</p>")
    totals = report.get("totals") or {}
    parts.append(f"<p>Process CPU: <b>{_num(totals.get('cpu_pct'))}%</b> of one core from perf samples, "
                 f"{_num(totals.get('proc_cpu_pct'))}% from /proc.")
    shares = [(c, totals.get(f"{c}_pct")) for c in CATEGORIES]
    if any(value for _, value in shares):
        parts.append(" " + " · ".join(f"<span class=chip style='background:{COLORS[c]}'></span>"
                                      f"{CATEGORY_LABELS[c]} {value:.1f}%" for c, value in shares if value))
    parts.append("</p></header>")
    return "".join(parts)


def _findings(report):
    out = ["<section id=findings><h2>Findings</h2>"]
    for number, f in enumerate(report.get("findings", []) or []):
        evidence = "".join(f"<tr><td class=l>{_e(k)}</td><td class=l>{_e(_evidence_value(v))}</td></tr>"
                           for k, v in (f.get("evidence") or {}).items())
        remedy = ""
        if f.get("remedy"):
            remedy = (f"<div class=remedy><button class=copy data-copy=remedy-{number}>copy</button>"
                      f"<pre id=remedy-{number}>{_e(f['remedy'])}</pre></div>")
        tradeoff = f"<p><i>trade-off: {_e(f['tradeoff'])}</i></p>" if f.get("tradeoff") else ""
        out.append(f"<div class='finding {_e(f['severity'])}' data-finding='{_e(f['id'])}'>"
                   f"<h3>{_e(f['severity']).upper()} {_e(f['id'])}: {_e(f['title'])}</h3>"
                   f"<p>{_e(f.get('explanation'))}</p>{remedy}{tradeoff}"
                   + (f"<details><summary>evidence</summary><table class=evidence>{evidence}</table></details>"
                      if evidence else "") + "</div>")
    if len(out) == 1:
        out.append("<p>No findings.</p>")
    out.append("</section>")
    return "".join(out)


def _evidence_value(value):
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def _threads(report):
    rows = []
    for t in report.get("threads", []):
        categories = t.get("categories") or {}
        bar = "".join(f"<span class=bar title='{CATEGORY_LABELS[c]} {categories.get(c, 0):.1f}%' "
                      f"style='width:{3 * categories.get(c, 0):.0f}px;background:{COLORS[c]}'></span>"
                      for c in CATEGORIES if categories.get(c))
        rows.append(f"<tr><td>{t['tid']}</td><td class=l>{_e(t['role'])}</td><td>{_num(t.get('cpu_pct'))}</td>"
                    f"<td>{_num(t.get('proc_cpu_pct'))}</td>"
                    + "".join(f"<td>{_num(categories.get(c))}</td>" for c in CATEGORIES)
                    + f"<td class=l>{bar}</td></tr>")
    head = "".join(f"<th>{CATEGORY_LABELS[c]}</th>" for c in CATEGORIES)
    return (f"<section id=threads><h2>CPU by thread (% of one core)</h2><table><tr><th>tid</th><th class=l>role</th>"
            f"<th>CPU</th><th>/proc</th>{head}<th class=l></th></tr>{''.join(rows)}</table></section>")


def _sessions(report):
    rows = "".join(f"<tr><td>{s['session']}</td><td class=l>{_e(s.get('model'))}</td><td>{s['runs']}</td>"
                   f"<td>{_num(s.get('p50_ms'), 2)}</td><td>{_num(s.get('p95_ms'), 2)}</td>"
                   f"<td>{_num(s.get('p99_ms'), 2)}</td><td>{_num(s.get('max_ms'), 2)}</td></tr>"
                   for s in report.get("sessions", []))
    if not rows:
        why = (report.get("empty_sections") or {}).get("sessions", "no run() records")
        return f"<p class='dim empty' data-empty=sessions>No latency: {_e(why)}.</p>"
    return ("<table><tr><th>session</th><th class=l>model</th><th>runs</th>"
            f"<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th></tr>{rows}</table>"
            + "".join(_breakdown(s) for s in report.get("sessions", []) if s.get("latency_breakdown")))


def _breakdown(session):
    """The sched signal's latency breakdown of one session: typical and slow runs side by side, and
    the cause the analysis named."""
    breakdown = session["latency_breakdown"]
    head = "".join(f"<th>{_e(STATE_LABELS[state].split(' (')[0])} ms</th>" for state in STATES)
    rows = []
    for name in ("typical", "slow"):
        group = breakdown.get(name)
        if not group:
            continue
        held = ", ".join(f"{_e(h['comm'])} ({h['pid']}/{h['tid']}) {h['ms']:.2f} ms"
                         for h in (group.get("held_by") or [])[:2])
        rows.append(f"<tr data-group={name}><td class=l>{name}</td><td>{group['runs']}</td>"
                    f"<td>{_num(group['run_ms'], 2)}</td>"
                    + "".join(f"<td>{_num((group.get('states_ms') or {}).get(state), 2)}</td>" for state in STATES)
                    + f"<td class=l>{held or '-'}</td></tr>")
    lines = "".join(f"<p>{label}: {_e(part['detail'])}</p>"
                    for label, part in (("slow runs", breakdown.get("cause")),
                                        ("latency stepped", (breakdown.get("step") or {}).get("cause")))
                    if part and part.get("detail"))
    return (f"<h3>session {session['session']}: where run() time went (the caller's mean ms per run, from the "
            f"scheduler)</h3><table class=latency-breakdown data-session={session['session']}><tr>"
            f"<th class=l>runs</th><th>n</th><th>run() ms</th>{head}<th class=l>held the CPU (ms per run)</th></tr>"
            f"{''.join(rows)}</table>{lines}")


def _hot_paths(report):
    paths = report.get("hot_paths") or []
    rows = "".join(f"<tr><td>{_num(p['cpu_pct'])}</td><td class=l>{_e(p['role'])}</td>"
                   f"<td class=l>{_e(CATEGORY_LABELS.get(p['category'], p['category']))}</td>"
                   f"<td class=l><code>{_e(' > '.join(p['stack'].split(';')[-6:]))}</code></td></tr>" for p in paths)
    if not rows:
        return ""
    return ("<section id=hot-paths><h2>Hot call paths</h2><table><tr><th>CPU %</th><th class=l>role</th>"
            f"<th class=l>category</th><th class=l>path (last 6 frames)</th></tr>{rows}</table></section>")
