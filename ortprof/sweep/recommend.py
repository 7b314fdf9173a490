"""The latency budget, the Pareto front and the recommendation: the cheapest
configuration (lowest CPU) whose p95 stays within the budget, per condition.

Works on the aggregated cell dicts of sweep.json, so `--show DIR` can apply
another budget to a finished sweep.
"""
import re
from dataclasses import dataclass

from ..errors import InputError
from .stats import pareto_front

DEFAULT_BUDGET = "1.25x"
_BUDGET = re.compile(r"^\s*(?:x\s*(?P<xfirst>[0-9.]+)|(?P<factor>[0-9.]+)\s*x|(?P<ms>[0-9.]+)\s*(?:ms)?)\s*$",
                     re.I)


@dataclass(frozen=True)
class Budget:
    text: str
    factor: float = None     # times the defaults' p95
    ms: float = None         # absolute p95 in milliseconds

    def limit_ms(self, defaults_p95):
        if self.ms is not None:
            return self.ms
        return None if defaults_p95 is None else self.factor * defaults_p95

    def describe(self):
        return f"p95 <= {self.ms:g} ms" if self.ms is not None else f"p95 <= {self.factor:g}x the defaults' p95"


def parse_budget(text):
    """'1.25x' / 'x1.25' (factor of the defaults' p95) or '5ms' / '5' (absolute)."""
    match = _BUDGET.match(str(text))
    try:
        if match and (match.group("factor") or match.group("xfirst")):
            factor = float(match.group("factor") or match.group("xfirst"))
            if factor > 0:
                return Budget(str(text).strip(), factor=factor)
        elif match:
            ms = float(match.group("ms"))
            if ms > 0:
                return Budget(str(text).strip(), ms=ms)
    except ValueError:
        pass
    raise InputError(f"--latency-budget {text!r}: give a factor of the defaults' p95 (1.25x) "
                     "or milliseconds (5ms)")


def measured(cell):
    return cell.get("status") in ("ok", "partial") and cell.get("cpu_pct") is not None \
        and cell.get("p95_ms") is not None


def condition_key(cell):
    return tuple(sorted((cell.get("condition") or {}).items()))


def group_by_condition(cells):
    groups = {}
    for cell in cells:
        groups.setdefault(condition_key(cell), []).append(cell)
    return groups


def annotate(cells, budget):
    """Set ratios to the defaults, the Pareto front and budget flags on every cell;
    return one recommendation per condition."""
    recommendations = []
    for key, group in group_by_condition(cells).items():
        done = [cell for cell in group if measured(cell)]
        defaults = next((cell for cell in done if cell.get("is_defaults")), None)
        front = set(pareto_front([(cell["cpu_pct"], cell["p95_ms"]) for cell in done]))
        limit = budget.limit_ms(defaults["p95_ms"] if defaults else None)
        for cell in group:
            cell["pareto"] = False
            cell["within_budget"] = None
            cell["recommended"] = False
            cell["ratios"] = None
        for index, cell in enumerate(done):
            cell["pareto"] = index in front
            if defaults is not None and defaults["cpu_pct"] and defaults["p95_ms"]:
                cell["ratios"] = {"cpu": round(cell["cpu_pct"] / defaults["cpu_pct"], 3),
                                  "p95": round(cell["p95_ms"] / defaults["p95_ms"], 3)}
            if limit is not None:
                cell["within_budget"] = cell["p95_ms"] <= limit
        recommendations.append(_recommend(dict(key), group, done, defaults, limit, budget))
    return recommendations


def _recommend(condition, group, done, defaults, limit, budget):
    base = {"condition": condition, "budget": budget.text, "budget_ms": None if limit is None else round(limit, 3)}
    if limit is None:
        why = ("the defaults cell has no measurement" if any(c.get("is_defaults") for c in group)
               else "the matrix has no defaults cell (most threads, spinning on)")
        return dict(base, cell=None, settings=None, snippet=None,
                    reason=f"{why}; give --latency-budget in ms (e.g. 5ms)")
    within = [cell for cell in done if cell["p95_ms"] <= limit]
    if not within:
        fastest = min(done, key=lambda c: c["p95_ms"]) if done else None
        reason = f"no configuration kept p95 within {limit:.2f} ms"
        if fastest:
            reason += f"; the fastest, {fastest['label']}, had {fastest['p95_ms']:.2f} ms"
        return dict(base, cell=None, settings=None, snippet=None, reason=reason)
    best = min(within, key=lambda c: (c["cpu_pct"], c["p95_ms"]))
    best["recommended"] = True
    tied = [cell["label"] for cell in within if cell is not best and _overlap(cell, best, "cpu_pct")]
    price = {"cpu_pct": best["cpu_pct"], "cpu_ms_per_inference": best.get("cpu_ms_per_inference"),
             "p95_ms": best["p95_ms"], "ratios": best.get("ratios")}
    return dict(base, cell=best["id"], label=best["label"], settings=best["settings"],
                is_defaults=bool(best.get("is_defaults")), price=price, cpu_tied_with=tied,
                snippet=snippet(best["settings"], condition, price, best.get("is_defaults")))


def _overlap(one, other, figure):
    """Whether two cells' 95% intervals of `figure` overlap (no interval: no claim)."""
    first, second = (one.get("ci95") or {}).get(figure), (other.get("ci95") or {}).get(figure)
    return bool(first and second) and first[0] <= second[1] and second[0] <= first[1]


def overall(recommendations, cells):
    """One recommendation for the whole sweep: the only condition's, or the settings
    that stay within budget under every condition at the lowest mean CPU."""
    if len(recommendations) <= 1:
        return recommendations[0] if recommendations else None
    by_settings = {}
    for cell in cells:
        if measured(cell):
            by_settings.setdefault(cell["label"], []).append(cell)
    conditions = {condition_key({"condition": r["condition"]}) for r in recommendations}
    candidates = []
    for label, group in by_settings.items():
        if {condition_key(c) for c in group} == conditions and all(c.get("within_budget") for c in group):
            candidates.append((sum(c["cpu_pct"] for c in group) / len(group), label, group))
    if not candidates:
        return {"condition": None, "cell": None, "settings": None, "snippet": None,
                "reason": "no configuration met the latency budget under every condition; "
                          "see the recommendation per condition"}
    mean_cpu, label, group = min(candidates, key=lambda item: item[0])
    settings = group[0]["settings"]
    price = {"cpu_pct": round(mean_cpu, 3), "p95_ms": max(c["p95_ms"] for c in group), "ratios": None}
    return {"condition": None, "cell": None, "label": label, "settings": settings, "price": price,
            "is_defaults": bool(group[0].get("is_defaults")),
            "snippet": snippet(settings, None, price, group[0].get("is_defaults"),
                               note="within budget under every condition swept; mean CPU")}


def snippet(settings, condition, price, is_defaults=False, note=None):
    """Ready-to-paste Python that creates a session with `settings`."""
    lines = ["import onnxruntime as ort", ""]
    measured_line = f"# measured: {price['cpu_pct']:.1f}% of a core, p95 {price['p95_ms']:.2f} ms"
    ratios = price.get("ratios")
    if ratios and not is_defaults:
        measured_line += f" ({ratios['cpu']:.2f}x the defaults' CPU, {ratios['p95']:.2f}x their p95)"
    lines.append(measured_line)
    described = describe_condition(condition)
    if described or note:
        lines.append(f"# {'; '.join(part for part in (note, described) if part)}")
    if is_defaults:
        lines.append("# ORT's defaults are already the cheapest within the budget")
    lines.append("options = ort.SessionOptions()")
    for key, value in settings.items():
        if key == "execution_mode":
            mode = "ORT_PARALLEL" if value == "parallel" else "ORT_SEQUENTIAL"
            lines.append(f"options.execution_mode = ort.ExecutionMode.{mode}")
        elif key.startswith("session."):
            lines.append(f'options.add_session_config_entry("{key}", "{value}")')
        else:
            lines.append(f"options.{key} = {value}")
    lines.append('session = ort.InferenceSession("model.onnx", sess_options=options)')
    return "\n".join(lines)


def describe_condition(condition):
    if not condition:
        return ""
    parts = []
    if condition.get("cpus") is not None:
        parts.append(f"under a {condition['cpus']:g}-CPU quota")
    if condition.get("rate") is not None:
        parts.append("closed loop" if condition["rate"] == 0 else f"at {condition['rate']:g} requests/s")
    return ", ".join(parts)
