"""--fail-on for diffs: `cpu_ms_per_inference>+10%`, `p95_ms>+20%`, `spin_pct>+5`,
`finding:spin-wait:new`. A relative limit (%) compares delta/before, a plain one the delta in
the metric's unit. Only a significant change trips a gate: outside the noise floor and, where
the diff has one, outside the 95% interval (stats.significant)."""
import re

from ..analysis.gates import OPERATORS, expressions_of, known_finding
from ..errors import InputError
from ..model.report import CATEGORIES
from .stats import significant

_CHANGE = re.compile(r"^\s*([a-z_][a-z0-9_.]*)\s*(>=|<=|>|<)\s*([+-]?[0-9]+(?:\.[0-9]+)?)\s*(%?)\s*$")
FINDING_STATES = ("new", "resolved", "persisting")
LATENCY_METRICS = ("p50_ms", "p95_ms", "p99_ms")


def metric_names():
    cpu = ["cpu_pct", "cpu_ms_per_inference"]
    for category in CATEGORIES:
        cpu += [f"{category}_pct", f"{category}_ms_per_inference"]
    return cpu + list(LATENCY_METRICS) + ["futex_calls_per_inference", "futex_time_ms_per_inference",
                                         "throttled_ms"]


def parse_diff_gates(expressions):
    return [_parse(text) for text in expressions_of(expressions)]


def _parse(text):
    if text.startswith("finding:"):
        finding, _, state = text[len("finding:"):].strip().partition(":")
        state = state or "new"
        known_finding(text, finding)
        if state not in FINDING_STATES:
            raise InputError(f"--fail-on {text!r}: the state is one of {', '.join(FINDING_STATES)}")
        return ("finding", (finding, state), text)
    match = _CHANGE.match(text)
    if not match or match.group(1) not in metric_names():
        raise InputError(f"--fail-on {text!r}: expected METRIC>+N% or METRIC>+N (a change from BEFORE to AFTER; "
                         "METRIC: cpu_pct, cpu_ms_per_inference, CATEGORY_pct, CATEGORY_ms_per_inference, p50_ms, "
                         "p95_ms, p99_ms, futex_calls_per_inference, futex_time_ms_per_inference, throttled_ms; "
                         f"CATEGORY: {', '.join(CATEGORIES)}) or finding:ID[:new|resolved|persisting]")
    name, op, limit, percent = match.groups()
    return ("change", (name, OPERATORS[op], float(limit), bool(percent)), text)


def _quantities(diff, name):
    """[(label, quantity)] the metric names in the diff (latency: one per session)."""
    if name in LATENCY_METRICS:
        return [(f"session {row['session']} {name}", row[name]) for row in diff.get("latency") or []]
    if name.startswith("futex_"):
        key = {"futex_calls_per_inference": "calls", "futex_time_ms_per_inference": "time_ms"}[name]
        futex = diff.get("futex")
        return [(name, futex[key])] if futex and futex["unit"] == "per inference" else []
    if name == "throttled_ms":
        throttling = diff.get("throttling")
        return [(name, throttling["throttled_ms"])] if throttling else []
    unit = "pct" if name.endswith("_pct") else "ms_per_inference"
    row_name = name[:-len("_pct")] if unit == "pct" else name[:-len("_ms_per_inference")]
    rows = [r for r in diff.get("cpu") or [] if
            (r["group"] == "category" and r["name"] == row_name) or (row_name == "cpu" and r["group"] == "total")]
    return [(name, rows[0][unit])] if rows else []   # the total: /proc first (every thread), else perf


def evaluate_diff_gates(gates, diff):
    """[{expression, holds, detail}] for each gate, in order."""
    results = []
    for kind, value, text in gates:
        if kind == "finding":
            finding, state = value
            holds = any(f["id"] == finding for f in diff["findings"][state])
            results.append({"expression": text, "holds": holds,
                            "detail": f"{finding} is {state}" if holds else f"{finding} is not {state}"})
            continue
        name, compare, limit, relative = value
        found = [(label, q) for label, q in _quantities(diff, name) if q["delta"] is not None]
        if not found:
            results.append({"expression": text, "holds": False,
                            "detail": f"{name} is not compared in this diff (see not_compared)"})
            continue
        details, holds = [], False
        for label, q in found:
            change = _relative(q) if relative else q["delta"]
            unit = "%" if relative else ""
            if change is None:
                details.append(f"{label}: no relative change from 0")
                continue
            beyond = compare(change, limit)
            counted = beyond and significant(q["verdict"])
            holds = holds or counted
            why = q["verdict"] if not counted else q["verdict"] + (
                "" if q["interval"] else ", judged by the noise floor alone")
            details.append(f"{label} {change:+.2f}{unit} ({why})")
        results.append({"expression": text, "holds": holds, "detail": "; ".join(details)})
    return results


def _relative(q):
    return None if not q["before"] else 100 * q["delta"] / abs(q["before"])
