"""Two Sides -> the diff document (schema ortprof.diff/1): what changed, CPU per category and
role, futex, throttling, latency per session, findings, hot paths and functions.

Every figure is a quantity {before, after, delta, ratio, interval, verdict}; the interval
is the 95% bootstrap interval of the delta where both sides are run directories
(stats.py), and the verdict says whether the delta is a change or noise.
"""
from collections import Counter, defaultdict

from ..analysis.diagnose import SAMPLE_FINDING_IDS
from ..analysis.pipeline import stack_category
from ..model.report import CATEGORIES
from ..signals.sched.timeline import ON_CPU, STATES
from . import SCHEMA
from .bins import Bins, by_category, by_role
from .stats import NOISE_FLOORS, percentile_delta_interval, ratio_delta_interval, verdict

IDLE_ROLES = ("idle",)


def quantity(before, after, interval=None, kind="pct", floor=None):
    delta = None if before is None or after is None else after - before
    ratio = after / before if delta is not None and before else None
    return {"before": _round(before), "after": _round(after), "delta": _round(delta),
            "ratio": _round(ratio), "interval": interval, "verdict": verdict(before, after, interval, kind, floor)}


def ms_floor(side):
    """The noise floor of a CPU-ms-per-inference delta: the % of a core floor in this run's units."""
    return side.ms_per_inference(NOISE_FLOORS["pct"][0])


def _round(value, digits=4):
    return None if value is None else round(float(value), digits)


def compare(before, after, top=10):
    """The ortprof.diff/1 document of two Sides (inputs.Side)."""
    doc = {"schema": SCHEMA, "before": _describe(before), "after": _describe(after),
           "per_inference": bool(before.inferences and after.inferences),
           "changes": [], "warnings": [], "notes": [], "not_compared": {}}
    with_intervals = before.profile is not None and after.profile is not None
    if not with_intervals:
        json_sides = " and ".join(side.label for side in (before, after) if side.profile is None)
        doc["notes"].append(f"{json_sides}: a report JSON has no per-run latencies or CPU timeline, so latency "
                            "and CPU deltas have no interval; they are judged by the noise floor alone")
    if not doc["per_inference"]:
        missing = " and ".join(side.label for side in (before, after) if not side.inferences)
        doc["not_compared"]["per_inference"] = (f"{missing} has no run() records from the hook: CPU is compared "
                                                "as % of a core only, not per inference")
    doc["changes"], doc["warnings"] = what_changed(before, after)
    bins = (_bin_data(before), _bin_data(after)) if with_intervals else None
    doc["cpu"] = cpu_rows(before, after, bins, doc["not_compared"])
    doc["futex"] = futex(before, after, doc["not_compared"])
    doc["throttling"] = throttling(before, after, doc["not_compared"])
    doc["latency"] = latency(before, after, with_intervals, doc["not_compared"])
    doc["latency_breakdown"] = latency_breakdowns(before, after, doc["not_compared"])
    if doc["latency_breakdown"]:
        doc["notes"].append("latency breakdowns are means over groups of runs: their deltas have no interval and "
                            "are judged by the noise floor alone")
    doc["findings"] = findings(before, after, doc["not_compared"])
    doc["hot_paths"], doc["functions"] = hot_paths(before, after, doc["per_inference"], top, doc["notes"], bins,
                                                   doc["not_compared"])
    for side in (before, after):
        for section, why in side.report.empty_sections.items():
            doc["notes"].append(f"{side.label}: {section} empty: {why}")
    return doc


def _describe(side):
    return {"source": side.source, "kind": side.kind, "window_seconds": side.window_seconds,
            "inferences": side.inferences, "samples": side.report.samples or 0, "status": side.report.status}


# ---------------------------------------------------------------- what changed

def _flat_options(options):
    flat = {}
    for key, value in (options or {}).items():
        if key == "config" and isinstance(value, dict):
            flat.update({str(k): v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _build_kind(ort):
    if ort.build_config:
        return f"source build ({ort.build_config})"
    return "stock wheel" if ort.ort_version else None


def _machine(side):
    if side.manifest is None:
        return None
    environment = side.manifest.environment
    cpu = environment.get("cpu") or {}
    return {"hostname": side.manifest.hostname,
            "cpu model": cpu.get("model"), "logical cores": cpu.get("logical_cores"),
            "kernel": (environment.get("kernel") or {}).get("release")}


def what_changed(before, after):
    """([{what, before, after}], warnings): settings, ORT, quota, command and machine that differ."""
    changes = []

    def differ(what, old, new):
        if old != new:
            changes.append({"what": what, "before": _text(old), "after": _text(new)})
    b, a = before.report, after.report
    for old, new in _pair_sessions(b.sessions, a.sessions):
        if old is None or new is None:
            continue
        options_b, options_a = _flat_options(old.options), _flat_options(new.options)
        for key in sorted(set(options_b) | set(options_a)):
            differ(f"session {new.session} option {key}", options_b.get(key), options_a.get(key))
        differ(f"session {new.session} model", old.model, new.model)
    ort_b, ort_a = b.ort, a.ort
    differ("ORT version", ort_b.ort_version, ort_a.ort_version)
    differ("ORT build", _build_kind(ort_b), _build_kind(ort_a))
    differ("ORT build-id", ort_b.build_id, ort_a.build_id)
    differ("ORT symbols", ort_b.symbol_status, ort_a.symbol_status)
    differ("ORT optimized", ort_b.optimized, ort_a.optimized)
    differ("usable cores", ort_b.usable_cores, ort_a.usable_cores)
    differ("CPU quota (cpus)", b.cgroup.quota_cpus, a.cgroup.quota_cpus)
    differ("command", b.command, a.command)
    warnings = []
    machine_b, machine_a = _machine(before), _machine(after)
    if machine_b and machine_a:
        for key in machine_b:
            differ(f"machine {key}", machine_b[key], machine_a[key])
        moved = [key for key in ("hostname", "cpu model", "logical cores")
                 if machine_b[key] and machine_a[key] and machine_b[key] != machine_a[key]]
        if moved:
            warnings.append(f"the runs come from different machines ({', '.join(moved)} differ): CPU and latency "
                            "deltas mix the change with the hardware")
        options_b, options_a = before.manifest.options, after.manifest.options
        for key in ("profiler", "frequency", "call_graph", "futex", "cpus"):
            differ(f"record --{key.replace('_', '-')}", options_b.get(key), options_a.get(key))
    return changes, warnings


def _text(value):
    if value is None:
        return None
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def _pair_sessions(sessions_b, sessions_a):
    """Sessions matched by id when both runs have the same ids, else in order."""
    ids_b, ids_a = [s.session for s in sessions_b], [s.session for s in sessions_a]
    if sorted(ids_b) == sorted(ids_a):
        by_id = {s.session: s for s in sessions_a}
        return [(s, by_id[s.session]) for s in sessions_b]
    pairs = list(zip(sessions_b, sessions_a))
    pairs += [(s, None) for s in sessions_b[len(pairs):]] + [(None, s) for s in sessions_a[len(pairs):]]
    return pairs


# ---------------------------------------------------------------- CPU

def _bin_data(side):
    bins = Bins(side.profile)
    profile = side.profile
    return {"seconds": bins.seconds(), "runs": bins.runs(), "proc": bins.proc_cpu(),
            "category": bins.sampled_cpu(by_category(profile)), "role": bins.sampled_cpu(by_role),
            "path": bins.sampled_cpu(lambda thread, stack_id: profile.folded(stack_id)),
            "function": bins.sampled_cpu(lambda thread, stack_id: (profile.names(stack_id) or [None])[-1])}


def _interval(bins, group, key, per_inference):
    """The 95% interval of one row's delta from the per-second bins (None without bins)."""
    if bins is None:
        return None
    series = [side[group].get(key, side["seconds"] * 0) for side in bins]
    if per_inference:
        return ratio_delta_interval((series[0] * 1000, bins[0]["runs"]), (series[1] * 1000, bins[1]["runs"]))
    return ratio_delta_interval((series[0] * 100, bins[0]["seconds"]), (series[1] * 100, bins[1]["seconds"]))


def _role_pct(report):
    sums = defaultdict(float)
    for row in report.threads:
        if row.cpu_pct is not None and row.role not in IDLE_ROLES:
            sums[row.role] += row.cpu_pct
    return sums


def cpu_rows(before, after, bins, not_compared):
    """Rows {name, group, source, pct, ms_per_inference}: the process, each category, each role."""
    totals_b, totals_a = before.report.totals, after.report.totals
    rows = []

    def add(name, group, source, pct_b, pct_a, series_b=None, series_a=None):
        pct_interval = ms_interval = None
        if series_b is not None and series_a is not None:
            pct_interval = ratio_delta_interval((series_b * 100, bins[0]["seconds"]),
                                                (series_a * 100, bins[1]["seconds"]))
            ms_interval = ratio_delta_interval((series_b * 1000, bins[0]["runs"]), (series_a * 1000, bins[1]["runs"]))
        rows.append({"name": name, "group": group, "source": source,
                     "pct": quantity(pct_b, pct_a, pct_interval, "pct"),
                     "ms_per_inference": quantity(before.ms_per_inference(pct_b), after.ms_per_inference(pct_a),
                                                  ms_interval, "ms_per_inference", ms_floor(before))})

    def series(side_bins, group, key):
        if side_bins is None:
            return None
        table = side_bins[group] if group != "proc" else {None: side_bins["proc"]}
        value = table.get(key)
        return value if value is not None else (None if group == "proc" else side_bins["seconds"] * 0)
    b_bins, a_bins = bins or (None, None)
    if totals_b.proc_cpu_pct is not None and totals_a.proc_cpu_pct is not None:
        add("process", "total", "/proc", totals_b.proc_cpu_pct, totals_a.proc_cpu_pct,
            series(b_bins, "proc", None), series(a_bins, "proc", None))
    if totals_b.cpu_pct is not None and totals_a.cpu_pct is not None:
        sampled = [sum(filter(lambda v: v is not None, (series(x, "category", c) for c in CATEGORIES)))
                   if x is not None else None for x in (b_bins, a_bins)]
        add("process", "total", "perf", totals_b.cpu_pct, totals_a.cpu_pct, *sampled)
        for category in CATEGORIES:
            attribute = f"{category}_pct"
            add(category, "category", "perf", getattr(totals_b, attribute), getattr(totals_a, attribute),
                series(b_bins, "category", category), series(a_bins, "category", category))
        roles_b, roles_a = _role_pct(before.report), _role_pct(after.report)
        for role in sorted(set(roles_b) | set(roles_a), key=lambda r: -max(roles_b.get(r, 0), roles_a.get(r, 0))):
            add(role, "role", "perf", roles_b.get(role, 0.0), roles_a.get(role, 0.0),
                series(b_bins, "role", role), series(a_bins, "role", role))
    else:
        missing = " and ".join(side.label for side, t in ((before, totals_b), (after, totals_a))
                               if t.cpu_pct is None)
        not_compared["cpu_categories"] = f"{missing} has no perf samples: CPU per category and role not compared"
    if not rows:
        not_compared["cpu"] = "neither perf samples nor /proc CPU on both sides"
    return rows


# ---------------------------------------------------------------- futex, throttling

def _per_inference(side, value):
    return None if value is None or not side.inferences else value / side.inferences


def futex(before, after, not_compared):
    f_b, f_a = before.report.futex, after.report.futex
    if not (f_b.recorded and f_a.recorded):
        reasons = [f"{side.label}: {f.missing_reason or 'no futex events'}"
                   for side, f in ((before, f_b), (after, f_a)) if not f.recorded]
        not_compared["futex"] = "; ".join(reasons)
        return None
    per_inference = before.inferences and after.inferences

    def time_ms(side, f):
        total = (f.time_ms_per_s or 0) * side.window_seconds
        return _per_inference(side, total) if per_inference else f.time_ms_per_s

    def calls(side, f):
        return _per_inference(side, f.calls or 0) if per_inference else f.calls_per_s
    kind = "ms_per_inference" if per_inference else "ms"
    return {"unit": "per inference" if per_inference else "per second",
            "calls": quantity(calls(before, f_b), calls(after, f_a), None, "count"),
            "time_ms": quantity(time_ms(before, f_b), time_ms(after, f_a), None, kind,
                                ms_floor(before) if per_inference else None)}


def throttling(before, after, not_compared):
    c_b, c_a = before.report.cgroup, after.report.cgroup
    if c_b.throttled_ms is None or c_a.throttled_ms is None:
        not_compared["throttling"] = "the cgroup's cpu.stat was not read on both sides"
        return None
    return {"throttled_ms": quantity(c_b.throttled_ms, c_a.throttled_ms, None, "ms"),
            "throttled_periods": quantity(c_b.throttled_periods, c_a.throttled_periods, None, "count"),
            "throttled_ms_per_inference": quantity(_per_inference(before, c_b.throttled_ms),
                                                   _per_inference(after, c_a.throttled_ms), None,
                                                   "ms_per_inference", ms_floor(before))}


# ---------------------------------------------------------------- latency

def _durations(side):
    by_session = defaultdict(list)
    if side.profile is not None:
        for run in side.profile.runs:
            by_session[run.session].append(run.seconds * 1000)
    return by_session


def latency(before, after, with_intervals, not_compared):
    sessions_b, sessions_a = before.report.sessions, after.report.sessions
    missing = [side.label for side, s in ((before, sessions_b), (after, sessions_a)) if not s]
    if missing:
        not_compared["latency"] = (f"{' and '.join(missing)} has no run() records from the startup hook "
                                   "(not a Python workload, or --pid without the hook)")
        return []
    durations_b, durations_a = _durations(before), _durations(after)
    rows = []
    for old, new in _pair_sessions(sessions_b, sessions_a):
        if old is None or new is None:
            only = old or new
            not_compared[f"latency.session {only.session}"] = (
                f"session {only.session} only in {'BEFORE' if old else 'AFTER'}")
            continue
        row = {"session": new.session, "model": new.model, "runs": quantity(old.runs, new.runs, None, "count"),
               "rate_per_s": quantity(old.rate_per_s, new.rate_per_s, None, "count")}
        for name, q in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99)):   # row keys are SessionSummary fields
            interval = None
            if with_intervals:
                interval = percentile_delta_interval(durations_b.get(old.session, []),
                                                     durations_a.get(new.session, []), q)
            row[name] = quantity(getattr(old, name), getattr(new, name), interval, "latency_ms")
        rows.append(row)
    return rows


# ---------------------------------------------------------------- latency breakdown (scheduler states)

BREAKDOWN_GROUPS = ("typical", "slow")
HOLDERS_COMPARED = 3


def _breakdown_missing(side):
    from ..render.html_sched import missing_reason
    return f"{side.label}: {missing_reason(side.report.empty_sections)}"


def _holders(group):
    """ms per run by holder, keyed by comm (pids and tids differ between two recordings)."""
    held = defaultdict(float)
    for holder in group.held_by if group is not None else ():
        held[holder.comm] += holder.ms
    return held


def breakdown_group(old, new):
    """One group (typical or slow) of a session in both runs: run ms, the caller's ms per state, the
    top holders of the CPU, and the wake-up and straggler ms where the analysis gave them."""
    states = [state for state in STATES
              if state == ON_CPU or old.states_ms.get(state) or new.states_ms.get(state)]
    row = {"runs": quantity(old.runs, new.runs, None, "count"),
           "run_ms": quantity(old.run_ms, new.run_ms, None, "latency_ms"),
           "states_ms": {state: quantity(old.states_ms.get(state, 0.0), new.states_ms.get(state, 0.0), None,
                                         "latency_ms") for state in states}}
    held_b, held_a = _holders(old), _holders(new)
    top = sorted(set(held_b) | set(held_a), key=lambda comm: -max(held_b.get(comm, 0.0), held_a.get(comm, 0.0)))
    row["held_by"] = [dict(comm=comm, **quantity(held_b.get(comm, 0.0), held_a.get(comm, 0.0), None, "latency_ms"))
                      for comm in top[:HOLDERS_COMPARED]]
    for name, value in (("wakeup_ms", lambda g: g.wakeup.ms if getattr(g, "wakeup", None) else None),
                        ("straggler_ms", lambda g: getattr(g, "straggler_ms", None))):
        b, a = value(old), value(new)
        if b is not None or a is not None:
            row[name] = quantity(b, a, None, "latency_ms")
    return row


def latency_breakdowns(before, after, not_compared):
    """Per session in both runs: its typical and slow runs compared (the sched signal's breakdown)."""
    rows, missing = [], []
    for old, new in _pair_sessions(before.report.sessions, after.report.sessions):
        if old is None or new is None:
            continue
        b, a = old.latency_breakdown, new.latency_breakdown
        if b is None or a is None:
            missing += [_breakdown_missing(side) for side, x in ((before, b), (after, a)) if x is None]
            continue
        row = {"session": new.session, "model": new.model, "groups": {}}
        for group in BREAKDOWN_GROUPS:
            old_group, new_group = getattr(b, group), getattr(a, group)
            if old_group is not None and new_group is not None:
                row["groups"][group] = breakdown_group(old_group, new_group)
        causes = [getattr(x, "cause", None) for x in (b, a)]
        row["cause"] = {"before": causes[0].id if causes[0] else None, "after": causes[1].id if causes[1] else None}
        rows.append(row)
    if missing:
        not_compared["latency_breakdown"] = "; ".join(sorted(set(missing)))
    return rows


# ---------------------------------------------------------------- findings

def _sampled(side):
    return bool(side.report.samples)


def findings(before, after, not_compared):
    """Resolved, new and persisting findings. A finding only perf samples can raise is left out when
    one side has no samples: there it is unknown, not gone."""
    by_id_b = {f.id: f for f in before.report.findings}
    by_id_a = {f.id: f for f in after.report.findings}
    unsampled = [side.label for side in (before, after) if not _sampled(side)]
    if unsampled:
        unknown = sorted(i for i in set(by_id_b) | set(by_id_a) if i in SAMPLE_FINDING_IDS)
        for i in unknown:
            by_id_b.pop(i, None)
            by_id_a.pop(i, None)
        if unknown:
            not_compared["findings"] = (f"{' and '.join(unsampled)} has no perf samples: "
                                        f"{', '.join(unknown)} cannot be compared")

    def brief(f):
        return {"id": f.id, "severity": f.severity, "title": f.title}
    return {"resolved": [brief(by_id_b[i]) for i in by_id_b if i not in by_id_a],
            "new": [brief(by_id_a[i]) for i in by_id_a if i not in by_id_b],
            "persisting": [dict(brief(by_id_a[i]), before_title=by_id_b[i].title)
                           for i in by_id_a if i in by_id_b]}


# ---------------------------------------------------------------- hot paths and functions

def profile_weights(profile):
    """(ns by folded stack, category by stack, self ns by function) of a whole profile."""
    paths, categories, functions = Counter(), {}, Counter()
    category_ns = defaultdict(Counter)
    for thread in profile.threads.values():
        for stack_id, ns in thread.ns_by_stack.items():
            folded = profile.folded(stack_id)
            paths[folded] += ns
            category_ns[folded][stack_category(profile, stack_id, thread.role)] += ns
            names = profile.names(stack_id)
            if names:
                functions[names[-1]] += ns
    for folded, counter in category_ns.items():
        categories[folded] = counter.most_common(1)[0][0]
    return paths, categories, functions


def _side_weights(side, use_profile):
    """(paths, categories, functions), each weight as % of a core."""
    if use_profile:
        paths_ns, categories, functions_ns = profile_weights(side.profile)
        scale = 100 / (side.window_seconds * 1e9) if side.window_seconds else 0
        return ({k: v * scale for k, v in paths_ns.items()}, categories,
                {k: v * scale for k, v in functions_ns.items()})
    paths, categories = Counter(), {}
    for path in side.report.hot_paths:
        paths[path.stack] += path.cpu_pct
        categories.setdefault(path.stack, path.category)
    functions = {f.function: f.cpu_pct for f in side.report.top_functions.self}
    return paths, categories, functions


def hot_paths(before, after, per_inference, top, notes, bins=None, not_compared=None):
    """The paths and functions (self time) that grew and shrank most, per inference (else % of a core)."""
    unsampled = [side.label for side in (before, after) if not _sampled(side)]
    if unsampled:
        if not_compared is not None:
            not_compared["hot_paths"] = f"{' and '.join(unsampled)} has no perf samples"
        empty = {"unit": "ms_per_inference" if per_inference else "pct", "grew": [], "shrank": []}
        return empty, dict(empty)
    use_profiles = before.profile is not None and after.profile is not None
    if not use_profiles:
        notes.append("hot paths and functions compare each report's top entries only (a report JSON keeps "
                     "its top 15): a path outside one side's top counts as 0 there")
    w_b, w_a = _side_weights(before, use_profiles), _side_weights(after, use_profiles)

    def unit(side, pct):
        return side.ms_per_inference(pct) if per_inference else pct
    kind = "ms_per_inference" if per_inference else "pct"

    def table(group, old, new, categories=None):
        rows = []
        for key in set(old) | set(new):
            b, a = unit(before, old.get(key, 0.0)), unit(after, new.get(key, 0.0))
            row = {"name": key, "before": _round(b), "after": _round(a), "delta": _round(a - b)}
            if categories is not None:
                row["category"] = categories[1].get(key) or categories[0].get(key)
            rows.append(row)
        grew = sorted((r for r in rows if r["delta"] > 0), key=lambda r: (-r["delta"], r["name"]))[:top]
        shrank = sorted((r for r in rows if r["delta"] < 0), key=lambda r: (r["delta"], r["name"]))[:top]
        for row in grew + shrank:   # intervals for the listed rows only: a bootstrap each
            row["interval"] = _interval(bins, group, row["name"], per_inference)
            row["verdict"] = verdict(row["before"], row["after"], row["interval"], kind,
                                     ms_floor(before) if per_inference else None)
        return {"unit": "ms_per_inference" if per_inference else "pct", "grew": grew, "shrank": shrank}
    return table("path", w_b[0], w_a[0], (w_b[1], w_a[1])), table("function", w_b[2], w_a[2])
