"""--fail-on expressions for CI: `spin_pct>20`, `futex.calls_per_inference>=50`,
`finding:cpu-throttling`, `severity:warning`. Any expression that holds fails the gate."""
import operator
import re

from ..errors import InputError
from ..findings import SEVERITIES, severity_rank

_COMPARISON = re.compile(r"^\s*([a-z_][a-z0-9_.]*)\s*(>=|<=|==|!=|>|<)\s*(-?[0-9]+(?:\.[0-9]+)?)\s*$")
OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
              "==": operator.eq, "!=": operator.ne}


def expressions_of(options):
    """The single expressions of repeated and comma-separated --fail-on options."""
    return [part for text in options for part in filter(None, (p.strip() for p in text.split(",")))]


def known_finding(text, finding):
    """`finding` when it is a finding id, else one clear error about the expression `text`."""
    from .diagnose import FINDING_IDS
    if finding not in FINDING_IDS:
        raise InputError(f"--fail-on {text!r}: unknown finding; one of {', '.join(FINDING_IDS)}")
    return finding


def parse_gates(expressions):
    return [_parse(text) for text in expressions_of(expressions)]


def _parse(text):
    if text.startswith("finding:"):
        return ("finding", known_finding(text, text[len("finding:"):].strip()), text)
    if text.startswith("severity:"):
        level = text[len("severity:"):].strip()
        if level not in SEVERITIES:
            raise InputError(f"--fail-on {text!r}: severity is one of {', '.join(SEVERITIES)}")
        return ("severity", level, text)
    match = _COMPARISON.match(text)
    if not match:
        raise InputError(f"--fail-on {text!r}: expected METRIC>NUMBER (e.g. spin_pct>20), "
                         "finding:ID or severity:LEVEL")
    return ("compare", (match.group(1), OPERATORS[match.group(2)], float(match.group(3))), text)


def _metric(report, name):
    """`spin_pct` means totals.spin_pct; dotted names walk the report's JSON, the names users
    write (futex.calls_per_inference)."""
    if "." not in name:
        node = report.get("totals", {})
        if name in node:
            return node[name]
        return report.get(name)
    node = report
    for key in name.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def evaluate(gates, report):
    """The expressions that hold (each a text), in order. `report`: the typed Report."""
    tripped = []
    document = None
    for kind, value, text in gates:
        if kind == "finding":
            if any(f.id == value for f in report.findings):
                tripped.append(text)
        elif kind == "severity":
            if any(severity_rank(f.severity) >= severity_rank(value) for f in report.findings):
                tripped.append(text)
        else:
            name, compare, limit = value
            document = document or report.to_json()
            actual = _metric(document, name)
            if actual is None or isinstance(actual, bool) or not isinstance(actual, (int, float)):
                raise InputError(f"--fail-on {text!r}: {name!r} is not a number in this report "
                                 "(e.g. spin_pct, futex.calls_per_inference, cgroup.throttled_periods)")
            if compare(float(actual), limit):
                tripped.append(f"{text} (is {actual})")
    return tripped
