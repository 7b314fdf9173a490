"""Findings: rules over the typed Report, each with evidence, remedy and price.

Rules read only the assembled report (threads, totals, futex, sessions,
cgroup, the ORT module's facts in `report.ort`), so they are pure and testable
on fixtures. Each `Rule` declares the signals it needs; the lists of finding
ids (all, sample-only) are derived from RULES.
"""
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from ..findings import Finding
from ..model.report import OrtContext, Report
from ..signals.runs import SessionSummary
from . import roles
from .remedies import Line, Note, Remedy, config_entry, execution_mode, intra_op_threads, render

# Thresholds (percent of one core unless said otherwise).
SPIN_MIN_PCT = 5.0
SPIN_SHARE_OF_WORKERS = 0.30
CALLER_SPIN_MIN_PCT = 5.0
SYNC_MIN_PCT = 3.0
FUTEX_PER_INFERENCE_MIN = 20
VARIANCE_RATIO = 2.0
VARIANCE_MIN_RUNS = 30
PYTHON_SHARE = 0.5
BUSY_NATIVE_MIN_PCT = 10.0   # /proc CPU of a thread no profiler could see into
SPIN_DURATION_SINCE = (1, 26)   # session.intra_op.spin_duration_us appeared in ORT 1.26
SHORT_SECTIONS_SHARE_PCT = 50.0   # small-parallel-sections: most of the sections are short
SHORT_SECTIONS_MIN_PCT = 1.0      # ... and the spin + sync around them costs at least this much of a core
POOL_SPIN_MIN_PCT = 1.0           # a pool whose workers spin less than this gets no remedy line of its own

# The seed article's measured trade-off, quoted in remedies.
SEED_TRADEOFF = ("seed measurement (MiniLM, 1 request/s): defaults 47% CPU / 2.5 ms; "
                 "allow_spinning=0: 3% / 6 ms (2.4x latency); intra_op_num_threads=1: 0.5% / 4.6 ms (1.84x)")


UNKNOWN_REASON = "the session was created before ortprof attached"
UNKNOWN_OPTION = f"unknown ({UNKNOWN_REASON})"


def _current(sessions: List[SessionSummary], key, default):
    """What the hook saw for a session option (first session that set it), as text for remedies;
    unknown, not the default, when a session's options were set before ortprof looked."""
    for session in sessions:
        options = session.options or {}
        if key in options:
            return options[key]
        if key in options.get("config", {}):
            return options["config"][key]
    return UNKNOWN_OPTION if any(not session.options_known for session in sessions) else default


def _now(*values):
    """The remedy's "now:" note from (name, current value) pairs, the unknown reason said once."""
    unknown = any(value == UNKNOWN_OPTION for _name, value in values)
    shown = ", ".join(f"{name}={'unknown' if value == UNKNOWN_OPTION else value}" for name, value in values)
    return f"now: {shown}" + (f" ({UNKNOWN_REASON})" if unknown else "")


def _model_file(report: Report, session=None):
    """The model file remedies name: `session`'s, else the one every session loaded; None if unknown
    (no model, several, or one in memory: "<N bytes>")."""
    names = {(s.model or "<>").rsplit("/", 1)[-1] for s in report.sessions if session in (None, s.session)}
    name = names.pop() if len(names) == 1 else "<>"
    return None if name.startswith("<") else name


def _remedy(report: Report, lines, session=None):
    """`lines` (remedies.Setting and Note) as code in the profiled client's language."""
    return render(Remedy(lines, model=_model_file(report, session)), report.ort.client)


def _ort_version(ort: OrtContext):
    version = ort.ort_version or "0"
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return (0, 0)


def _session_name(report: Report, session):
    for summary in report.sessions:
        if summary.session == session:
            model = summary.model or ""
            return f"session {session} ({model.rsplit('/', 1)[-1]})" if model else f"session {session}"
    return f"session {session}"


def spinning_pools(report: Report):
    """[(session, pool, spin %, tids)] of every pool whose workers spin, most first (needs pool_workers)."""
    pools: dict = {}
    for worker in report.pool_workers or ():
        entry = pools.setdefault((worker.session, worker.pool), [0.0, []])
        entry[0] += worker.spin_pct or 0.0
        entry[1].append(worker.tid)
    return sorted(((session, pool, round(spin, 2), tids) for (session, pool), (spin, tids) in pools.items()
                   if spin >= POOL_SPIN_MIN_PCT), key=lambda item: -item[2])


def _pool_remedy_lines(pools, report):
    """One allow_spinning line per spinning pool, naming its session (inter-op pools have their own key)."""
    lines: List[Line] = []
    for session, pool, spin, tids in pools:
        key = "inter_op" if pool == roles.INTER_POOL else "intra_op"
        lines.append(Note(f"{_session_name(report, session)}, {pool} pool (threads {', '.join(map(str, tids))}): "
                          f"spins {spin:.1f}% of a core"))
        lines.append(config_entry(f"session.{key}.allow_spinning", "0"))
    return lines


def spin_wait(report: Report):
    totals = report.totals
    workers = [t for t in report.threads if t.role in (roles.INTRA_WORKER, roles.INTER_WORKER)]
    worker_cpu = sum(t.cpu_pct or 0.0 for t in workers)
    spin = totals.spin_pct
    if spin is None or spin < SPIN_MIN_PCT or worker_cpu <= 0 or spin < SPIN_SHARE_OF_WORKERS * worker_cpu:
        return None
    sessions = report.sessions
    spinning = _current(sessions, "session.intra_op.allow_spinning", "1 (default)")
    threads = _current(sessions, "intra_op_num_threads", "0 (default: one per physical core)")
    now = _now(("allow_spinning", spinning), ("intra_op_num_threads", threads))
    remedy_lines: List[Line] = [
        config_entry("session.intra_op.allow_spinning", "0", comment="option A"),
        intra_op_threads(1, active=False, comment="option B", align=True),
    ]
    if _ort_version(report.ort) >= SPIN_DURATION_SINCE:
        remedy_lines.append(config_entry("session.intra_op.spin_duration_us", "200", active=False, gap=2,
                                         comment="option C: spin briefly"))
    remedy_lines.append(config_entry("session.force_spinning_stop", "1", active=False, gap=2,
                                     comment="option D: stop spinning when run() returns"))
    runs_per_s = sum(s.rate_per_s or 0 for s in sessions)
    pools = spinning_pools(report)
    evidence_pools = {}
    if pools:
        evidence_pools = {"pools": [{"session": session, "pool": pool, "spin_pct": spin, "tids": tids}
                                    for session, pool, spin, tids in pools]}
    if len(pools) > 1 or any(pool == roles.INTER_POOL for _session, pool, _spin, _tids in pools):
        remedy_lines += [Note("option A for each pool that spins:"), *_pool_remedy_lines(pools, report)]
    elif pools:
        now += f" ({_session_name(report, pools[0][0])}, the only pool that spins)"
    return Finding(
        id="spin-wait", severity="critical" if spin >= 25 else "warning",
        title=f"ORT pool workers burn {spin:.1f}% of a core spin-waiting for work",
        evidence={"spin_pct": spin, "worker_cpu_pct": round(worker_cpu, 2), "process_cpu_pct": totals.cpu_pct,
                  "workers": len(workers), "inferences_per_s": round(runs_per_s, 2),
                  "allow_spinning": spinning, "intra_op_num_threads": threads, **evidence_pools},
        remedy=_remedy(report, [Note(now), *remedy_lines], session=pools[0][0] if len(pools) == 1 else None),
        tradeoff=("A: spinning off cuts CPU by the spin share but every parallel section wakes workers "
                  "through futex, ~1.5-2.4x latency. B: one thread removes the pool (and its sync) at the "
                  "cost of single-core compute. C/D keep a short spin. " + SEED_TRADEOFF),
        explanation=("After each parallel section an idle worker polls its queue calling SpinPause up to "
                     "~1M times before it blocks; at low request rates that is most of its CPU."))


def caller_spin(report: Report):
    value = report.totals.caller_spin_pct
    if value is None:
        return None
    callers = [t for t in report.threads if t.role == roles.CALLER]
    caller_cpu = sum(t.cpu_pct or 0.0 for t in callers)
    if value < CALLER_SPIN_MIN_PCT and not (caller_cpu and value >= 0.2 * caller_cpu and value >= 1.0):
        return None
    return Finding(
        id="caller-spin", severity="warning",
        title=f"The calling thread spins {value:.1f}% of a core at the end of parallel sections (load imbalance)",
        evidence={"caller_spin_pct": value, "caller_cpu_pct": round(caller_cpu, 2)},
        remedy=_remedy(report, [config_entry("session.dynamic_block_base", "4"),
                                intra_op_threads("<usable cores>", active=False, lead="or fewer threads")]),
        tradeoff="Dynamic blocks balance work at slightly higher scheduling cost; fewer threads lower peak parallelism.",
        explanation="The caller waits (spinning, whatever allow_spinning says) for the slowest worker of each section.")


def futex_overhead(report: Report):
    futex = report.futex
    sync = report.totals.sync_pct or 0.0
    per_inference = futex.calls_per_inference or 0
    if not futex.recorded or (sync < SYNC_MIN_PCT and per_inference < FUTEX_PER_INFERENCE_MIN):
        return None
    return Finding(
        id="futex-overhead", severity="warning" if sync >= SYNC_MIN_PCT else "info",
        title=f"{futex.calls_per_s or 0:.0f} futex calls/s ({per_inference:.0f} per inference), "
              f"{sync:.1f}% of a core in blocking sync",
        evidence={"calls_per_s": futex.calls_per_s, "calls_per_inference": per_inference,
                  "time_ms_per_s": futex.time_ms_per_s, "sync_pct": sync,
                  "top_stack": futex.top_stacks[0].stack if futex.top_stacks else None},
        remedy=_remedy(report, [intra_op_threads(1, comment="no pool, no hand-offs")]
                       + ([Note("or a short spin instead of none:"),
                           config_entry("session.intra_op.spin_duration_us", "100", active=False)]
                          if _ort_version(report.ort) >= SPIN_DURATION_SINCE else
                          [Note("or spinning back on (the default) if the CPU it costs is acceptable")])),
        tradeoff="One thread trades parallel speed-up for zero sync; a short spin trades a little CPU for fewer sleeps/wakes.",
        explanation=("Each parallel section wakes sleeping workers (futex wake) and each idle worker blocks "
                     "again (futex wait); ORT 1.15-era builds go through nsync semaphores with deadlines "
                     "(the 'sem_timedwait' cost)."))


def cpu_throttling(report: Report):
    cgroup = report.cgroup
    throttled = cgroup.throttled_periods
    if not throttled:
        return None
    quota = cgroup.quota_cpus
    pool = report.pool_threads
    stalled_ms_per_s = (cgroup.throttled_ms or 0) / max(report.window_seconds, 1e-9)
    return Finding(
        id="cpu-throttling", severity="critical" if stalled_ms_per_s >= 50 else "warning",
        title=f"CPU quota throttled the process {throttled} times ({cgroup.throttled_ms or 0:.0f} ms stalled)",
        evidence={"throttled_periods": throttled, "throttled_ms": cgroup.throttled_ms,
                  "stalled_ms_per_s": round(stalled_ms_per_s, 1),
                  "quota_cpus": quota, "pool_threads": pool, "process_cpu_pct": report.totals.cpu_pct},
        remedy=_remedy(report, [intra_op_threads(1, comment="or floor(quota), at least 1"),
                                config_entry("session.intra_op.allow_spinning", "0")]),
        tradeoff="Fewer, non-spinning threads stay inside the quota: higher single-request latency, no stalls of a whole period (100 ms).",
        explanation="Spinning workers use up the cgroup's quota; the whole process then sleeps until the next period, which shows as p95/p99 spikes.")


def thread_oversubscription(report: Report):
    pool = report.pool_threads
    usable = report.ort.usable_cores
    quota = report.cgroup.quota_cpus
    limit = min(x for x in (usable, quota) if x) if (usable or quota) else None
    if not pool or not limit or pool <= max(1.0, limit):
        return None
    return Finding(
        id="thread-oversubscription", severity="warning",
        title=f"Intra-op pool of {pool} threads for {limit:g} usable CPUs",
        evidence={"pool_threads": pool, "usable_cores": usable, "quota_cpus": quota},
        remedy=_remedy(report, [intra_op_threads(max(1, int(limit)))]),
        tradeoff="Matching the pool to the CPUs you really get avoids preemption inside parallel sections.",
        explanation="ORT's default pool size counts the host's physical cores and ignores cgroup quotas and affinity.")


def latency_variance(report: Report):
    for session in report.sessions:
        ratio = session.variance_p99_p50
        if session.runs >= VARIANCE_MIN_RUNS and ratio and ratio >= VARIANCE_RATIO:
            current = _current([session], "session.dynamic_block_base", "0 (default)")
            return Finding(
                id="latency-variance", severity="warning",
                title=f"p99 is {ratio:.1f}x p50 ({session.p99_ms:.2f} vs {session.p50_ms:.2f} ms)",
                evidence={"session": session.session, "p50_ms": session.p50_ms, "p95_ms": session.p95_ms,
                          "p99_ms": session.p99_ms, "runs": session.runs, "dynamic_block_base": current},
                remedy=_remedy(report, [Note(_now(("dynamic_block_base", current))),
                                        config_entry("session.dynamic_block_base", "4")], session=session.session),
                tradeoff="ORT's documented best value against variance; a little more scheduling per parallel loop.",
                explanation="The constant cost model splits work once per section; a preempted or slow thread then delays the whole run.")
    return None


def debug_build(report: Report):
    """A Debug build by `ortprof build`, or any ORT module whose DWARF producer says -O0."""
    ort = report.ort
    if ort.build_config != "Debug" and ort.optimized is not False:
        return None
    return Finding(
        id="debug-build", severity="warning", title="ORT is a Debug build: hot paths are distorted",
        evidence={"build_config": ort.build_config, "native_module": ort.ort_module, "producer": ort.producer},
        remedy="ortprof build --config RelWithDebInfo   # optimized code, still with symbols",
        tradeoff="RelWithDebInfo inlines helpers (SpinPause, std::function) so fewer frames show, but timing is real.",
        explanation="-O0 code spends time in helpers an optimized build inlines away; spin and compute shares shift.")


def stripped_binary(report: Report):
    if report.ort.symbol_status != "stripped":
        return None
    return Finding(
        id="stripped-binary", severity="info",
        title="ORT's native module is stripped: functions are named by address (ort!fn_...)",
        evidence={"native_module": report.ort.ort_module, "build_id": report.ort.build_id},
        remedy="ortprof build --config RelWithDebInfo && ortprof record --ort-build RelWithDebInfo -- python app.py",
        tradeoff="A source build takes ~30 min on 2 cores; spin detection works without it (decoded PAUSE sites).",
        explanation="The PyPI wheel keeps only .eh_frame: ortprof derives function bounds and spin loops from it.")


def python_overhead(report: Report):
    return _python_overhead_from_perf(report) or _python_overhead_from_pyspy(report)


def _python_overhead_from_perf(report: Report):
    for thread in report.threads:
        if thread.role != roles.CALLER or thread.cpu_pct is None or thread.cpu_pct < 2.0:
            continue
        python = thread.categories["python"] + thread.categories["other"]
        if python >= PYTHON_SHARE * thread.cpu_pct:
            return Finding(
                id="python-overhead", severity="info",
                title=f"The caller thread spends {python:.1f}% of {thread.cpu_pct:.1f}% outside ORT (Python, numpy)",
                evidence={"tid": thread.tid, "outside_ort_pct": round(python, 2), "caller_cpu_pct": thread.cpu_pct},
                remedy="ortprof record --profiler py-spy -- python app.py   # see which Python code it is",
                tradeoff="Batching requests or moving pre/post-processing off the request path.",
                explanation="Pre/post-processing and the interpreter compete with inference on the calling thread.")
    return None


def _caller_tids(report: Report):
    return {tid for session in report.sessions for tid in session.caller_tids or ()}


def _python_overhead_from_pyspy(report: Report):
    """py-spy runs: the caller's Python time outside ORT's run() (pre/post-processing)."""
    callers = _caller_tids(report)
    for thread in report.python.threads:
        if callers and thread.tid not in callers or thread.cpu_pct < 2.0:
            continue
        if thread.outside_run_pct >= PYTHON_SHARE * thread.cpu_pct:
            top = thread.top_stacks[0].stack if thread.top_stacks else None
            return Finding(
                id="python-overhead", severity="info",
                title=(f"Thread {thread.tid} spends {thread.outside_run_pct:.1f}% of a core in Python "
                       f"outside run() ({thread.in_run_pct:.1f}% inside)"),
                evidence={"tid": thread.tid, "source": "py-spy", "outside_run_pct": thread.outside_run_pct,
                          "in_run_pct": thread.in_run_pct, "top_stack": top},
                remedy="# move pre/post-processing off the request path, batch requests, or vectorize it with numpy",
                tradeoff="Batching adds queueing latency; a worker pool for pre-processing adds threads that compete with ORT's.",
                explanation="py-spy samples Python stacks: time outside run() is the workload's own code, not ORT.")
    return None


def busy_native_thread(report: Report):
    """Without perf samples: a busy thread that Python does not know (no py-spy stack, not a run() caller)
    is most likely an ORT pool worker spinning. perf can confirm it."""
    if report.totals.cpu_pct is not None:
        return None   # perf samples say what each thread does
    python_tids = {thread.tid for thread in report.python.threads}
    caller_tids = _caller_tids(report)
    busy = [t for t in report.threads if (t.proc_cpu_pct or 0) >= BUSY_NATIVE_MIN_PCT
            and t.tid not in python_tids and t.tid not in caller_tids]
    if not busy:
        return None
    caller_cpu = sum(t.proc_cpu_pct or 0 for t in report.threads if t.tid in caller_tids)
    thread = max(busy, key=lambda t: t.proc_cpu_pct or 0)
    return Finding(
        id="busy-native-thread", severity="warning",
        title=(f"Thread {thread.tid} burns {thread.proc_cpu_pct:.1f}% of a core with no Python frames "
               f"(callers of run(): {caller_cpu:.1f}%): likely a spinning ORT pool worker"),
        evidence={"tid": thread.tid, "proc_cpu_pct": thread.proc_cpu_pct, "caller_cpu_pct": round(caller_cpu, 2),
                  "busy_threads": len(busy), "source": "/proc"},
        remedy="ortprof record -- python app.py   # record with perf to confirm: spin-wait vs compute",
        tradeoff="perf's dwarf stacks cost a few % of latency while recording; py-spy cannot see native threads.",
        explanation="ORT's pool workers are native threads: py-spy does not sample them, /proc still counts their CPU.")


def small_parallel_sections(report: Report):
    """Most parallel sections (ORT's profile) are too short for the pool: waking and joining
    workers costs more than the work they take over."""
    parallel = report.operators.parallel if report.operators is not None else None
    if not parallel or not parallel.node_runs or (parallel.short_share_pct or 0) < SHORT_SECTIONS_SHARE_PCT:
        return None
    cost = parallel.short_spin_sync_pct
    if cost is not None and cost < SHORT_SECTIONS_MIN_PCT:
        return None
    per_inference = parallel.per_inference
    names, parallel_sessions = [], []
    for session in parallel.sessions:
        names.append(_session_name(report, session))
        summary = next((s for s in report.sessions if s.session == session), None)
        if summary and "PARALLEL" in str((summary.options or {}).get("execution_mode", "")).upper():
            parallel_sessions.append(names[-1])
    lines: List[Line] = [Note(f"for {', '.join(names)}")] if names else []
    lines += [intra_op_threads(1, comment="option A: no intra-op pool for such a model"),
              config_entry("session.intra_op.allow_spinning", "0", active=False,
                           comment="option B: keep the pool, no spin")]
    if parallel_sessions:
        lines.append(execution_mode("sequential", active=False, comment=f"option C for {', '.join(parallel_sessions)}"))
    return Finding(
        id="small-parallel-sections", severity="warning" if (cost or 0) >= SPIN_MIN_PCT else "info",
        title=(f"{parallel.short_share_pct:.0f}% of the parallel sections are under {parallel.threshold_us:.0f} us: "
               f"too short for the thread pool" + (f" ({cost:.1f}% of a core in spin and sync around them)"
                                                   if cost is not None else "")),
        evidence={"parallel_node_runs": parallel.node_runs, "per_inference": per_inference,
                  "short_share_pct": parallel.short_share_pct, "threshold_us": parallel.threshold_us,
                  "spin_sync_pct": cost, "no_worker_pct": parallel.no_worker_pct,
                  "workers_mean": parallel.workers_mean, "sessions": list(parallel.sessions)},
        remedy=_remedy(report, lines, session=parallel.sessions[0] if len(parallel.sessions) == 1 else None),
        tradeoff=("A: nodes with long sections (see the hot operators: mean_us, parallel_calls_pct) lose their "
                  "speed-up; on small inputs the pool rarely helps (no_worker_pct). B: no spin, but every section "
                  "wakes the workers through futex: more sync, latency up."
                  + (" C: independent branches run one after another, the inter-op pool's hand-offs go away."
                     if parallel_sessions else "")),
        explanation=("Each parallel section wakes pool workers, splits the work and joins them; under "
                     f"~{parallel.threshold_us:.0f} us of work that costs more than it saves (measured), and "
                     "idle workers then spin or block until the next section."))


@dataclass(frozen=True)
class Rule:
    """A finding's rule and the signals it reads (ortprof.signals names). `needs`: all of them;
    `needs_any`: at least one (python-overhead comes from perf samples or from py-spy)."""
    id: str
    check: Callable[[Report], Optional[Finding]]
    needs: Tuple[str, ...] = ()
    needs_any: Tuple[str, ...] = ()


RULES = (
    Rule("spin-wait", spin_wait, needs=("samples",)),
    Rule("caller-spin", caller_spin, needs=("samples",)),
    Rule("futex-overhead", futex_overhead, needs=("samples", "futex")),
    Rule("cpu-throttling", cpu_throttling, needs=("cgroup",)),
    Rule("thread-oversubscription", thread_oversubscription),
    Rule("latency-variance", latency_variance, needs=("runs",)),
    Rule("debug-build", debug_build),
    Rule("stripped-binary", stripped_binary),
    Rule("python-overhead", python_overhead, needs_any=("samples", "pyspy")),
    Rule("busy-native-thread", busy_native_thread, needs=("threads",)),
    Rule("small-parallel-sections", small_parallel_sections, needs=("ort_profile",)),
)
FINDING_IDS = tuple(rule.id for rule in RULES)
# Findings that only perf samples can raise: without samples on a side they are unknown there, not absent.
SAMPLE_FINDING_IDS = tuple(rule.id for rule in RULES if "samples" in rule.needs)
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def diagnose(report: Report) -> List[Finding]:
    """The findings of `report`, most severe first. A rule whose finding carries another id is a bug."""
    findings = []
    for rule in RULES:
        finding = rule.check(report)
        if finding is not None:
            assert finding.id == rule.id, f"rule {rule.id} returned finding {finding.id}"
            findings.append(finding)
    return sorted(findings, key=lambda f: SEVERITY_ORDER[f.severity])
