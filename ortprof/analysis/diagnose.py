"""Findings: rules over the typed Report, each with evidence, remedy and price.

Rules read only the assembled report (threads, totals, futex, sessions,
cgroup, the ORT module's facts in `report.ort`), so they are pure and testable
on fixtures. Each `Rule` declares the signals it needs; the lists of finding
ids (all, sample-only) are derived from RULES.
"""
import textwrap
from collections import Counter
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from ..findings import Finding
from ..model.report import OrtContext, Report
from ..signals.runs import SessionSummary
from ..signals.sched.breakdown import NO_POOL
from ..signals.sched.section import OTHER_PROCESS, OTHER_SESSION, OWN_SESSION, PROFILER, Cause, HeldBy, LatencyBreakdown, RunGroup
from . import roles
from .remedies import (Line, Note, Remedy, config_entry, execution_mode, global_pool, intra_op_threads,
                       per_session_threads_off, render)

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
CAUSE_MIN_MS = 0.5                # the scheduler's causes of slow runs (latency_breakdown): ms per run at least
WAKEUP_MIN_SHARE = 0.10           # wake-up-delay: the wake-ups' own delay is this share of a typical run ...
WAKEUP_MIN_MS = 0.1               # ... and at least this many ms per run
PYTHON_GLOBAL_POOL_SEEN = (1, 31)  # set_global_thread_pool_sizes: in the 1.31.1 wheel, not in 1.15.1

# The seed article's measured trade-off, quoted in remedies.
SEED_TRADEOFF = ("seed measurement (MiniLM, 1 request/s): defaults 47% CPU / 2.5 ms; "
                 "allow_spinning=0: 3% / 6 ms (2.4x latency); intra_op_num_threads=1: 0.5% / 4.6 ms (1.84x)")


UNKNOWN_REASON = "not seen: set before ortprof looked, or run() timed by probes, which read no options"
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


def _per_run_throttling(report: Report):
    """(session, typical, slow) of the session whose slow runs were stalled most by the quota (its
    caller's throttled ms per run, or its workers' when more), or None without a scheduler breakdown."""
    def stalled(group: RunGroup):
        return max(group.states_ms.get("throttled", 0.0), group.workers_ms.get("throttled", 0.0))
    found = [(stalled(b.slow), session, b.typical, b.slow) for session, b in _breakdowns(report) if b.slow]
    found = [item for item in found if item[0] > 0]
    return max(found, key=lambda item: item[0])[1:] if found else None


def cpu_throttling(report: Report):
    cgroup = report.cgroup
    throttled = cgroup.throttled_periods
    if not throttled:
        return None
    quota = cgroup.quota_cpus
    pool = report.pool_threads
    stalled_ms_per_s = (cgroup.throttled_ms or 0) / max(report.window_seconds, 1e-9)
    title = f"CPU quota throttled the process {throttled} times ({cgroup.throttled_ms or 0:.0f} ms stalled)"
    per_run = {}
    runs = _per_run_throttling(report)
    if runs is not None:
        session, typical, slow = runs
        slow_ms, typical_ms = (g.states_ms.get("throttled", 0.0) for g in (slow, typical))
        per_run = {"session": session.session, "slow_run_ms": slow.run_ms, "slow_run_throttled_ms": slow_ms,
                   "slow_workers_throttled_ms": slow.workers_ms.get("throttled", 0.0),
                   "typical_run_ms": typical.run_ms, "typical_run_throttled_ms": typical_ms}
        title += f"; slow runs of {_session_name(report, session.session)} ({slow.run_ms:.1f} ms) were stalled " \
                 f"{slow_ms:.1f} ms each (typical runs {typical_ms:.1f} ms)"
    threads = max(1, int(quota)) if quota else 1
    return Finding(
        id="cpu-throttling", severity="critical" if stalled_ms_per_s >= 50 else "warning",
        title=title,
        evidence={"throttled_periods": throttled, "throttled_ms": cgroup.throttled_ms,
                  "stalled_ms_per_s": round(stalled_ms_per_s, 1),
                  "quota_cpus": quota, "pool_threads": pool, "process_cpu_pct": report.totals.cpu_pct, **per_run},
        remedy=_remedy(report, [intra_op_threads(threads, comment=(f"floor(quota {quota:g}), at least 1" if quota
                                                                   else "or floor(quota), at least 1")),
                                config_entry("session.intra_op.allow_spinning", "0")]),
        tradeoff="Fewer, non-spinning threads stay inside the quota: higher single-request latency, no stalls of a whole period (100 ms).",
        explanation="Spinning workers use up the cgroup's quota; the whole process then sleeps until the next period, which shows as p95/p99 spikes.")


def _session_pools(report: Report):
    """session -> its intra-op pool's size (threads, its caller included): the option when set, else
    its workers tied to it + 1, else the report's estimate of a pool (ORT's default)."""
    tied = Counter(w.session for w in report.pool_workers or () if w.pool == roles.INTRA_POOL)
    sizes = {}
    for session in report.sessions:
        try:
            option = int((session.options or {}).get("intra_op_num_threads") or 0)
        except (TypeError, ValueError):
            option = 0
        size = option or (tied[session.session] + 1 if tied.get(session.session) else report.pool_threads)
        if size:
            sizes[session.session] = size
    return sizes


def thread_oversubscription(report: Report):
    """More pool threads than usable CPUs: one session's pool, or several sessions' own pools together
    (each session's idle workers spin after its runs, beside the next session's)."""
    usable = report.ort.usable_cores
    quota = report.cgroup.quota_cpus
    limit = min(x for x in (usable, quota) if x) if (usable or quota) else None
    sizes = _session_pools(report)
    callers = len(_caller_tids(report)) or 1
    if len(sizes) > 1:
        pool = sum(size - 1 for size in sizes.values()) + min(callers, len(sizes))
    else:
        pool = report.pool_threads
    if not pool or not limit or pool <= max(1.0, limit):
        return None
    evidence = {"pool_threads": pool, "usable_cores": usable, "quota_cpus": quota}
    if len(sizes) > 1:
        share = max(1, int(limit) // len(sizes))
        lines: List[Line] = [Note(f"now: {len(sizes)} sessions with their own pools ("
                                  + ", ".join(f"session {s}: {n} threads" for s, n in sizes.items()) + ")"),
                             *_shared_pool_lines(report, int(limit))]
        lines += [Note("or, per session, pools that fit together and do not spin:"),
                  intra_op_threads(share, active=False), config_entry("session.intra_op.allow_spinning", "0", active=False)]
        return Finding(
            id="thread-oversubscription", severity="warning",
            title=f"{len(sizes)} sessions with their own intra-op pools: {pool} threads for {limit:g} usable CPUs",
            evidence={**evidence, "sessions": len(sizes), "session_pools": {str(s): n for s, n in sizes.items()}},
            remedy=_remedy(report, lines),
            tradeoff=("One shared pool keeps as many threads as CPUs whatever the number of sessions; runs of "
                      "different sessions at the same moment then share it. Smaller per-session pools lower each "
                      "session's peak parallelism."),
            explanation=("Each session creates its own intra-op pool; their idle workers spin after each run, "
                         "on the CPUs the other sessions' runs need."))
    return Finding(
        id="thread-oversubscription", severity="warning",
        title=f"Intra-op pool of {pool} threads for {limit:g} usable CPUs",
        evidence=evidence,
        remedy=_remedy(report, [intra_op_threads(max(1, int(limit)))]),
        tradeoff="Matching the pool to the CPUs you really get avoids preemption inside parallel sections.",
        explanation="ORT's default pool size counts the host's physical cores and ignores cgroup quotas and affinity.")


def _shared_pool_lines(report: Report, threads: int) -> List[Line]:
    """One intra-op pool for every session of the process."""
    lines: List[Line] = [global_pool(max(1, threads), comment="once, before the first session"),
                         per_session_threads_off(comment="for every session of the process (ORT refuses a mix)")]
    if report.ort.client in (None, "python") and _ort_version(report.ort) < PYTHON_GLOBAL_POOL_SEEN:
        lines.insert(0, Note(f"Python's global pools need an onnxruntime that has set_global_thread_pool_sizes "
                             f"(1.31.1 has it, 1.15.1 does not; this one: {report.ort.ort_version or 'unknown'})"))
    return lines


# -- why slow runs were slow (the sched signal's latency_breakdown) ---------------------------------

def _breakdowns(report: Report) -> List[Tuple[SessionSummary, LatencyBreakdown]]:
    return [(s, s.latency_breakdown) for s in report.sessions if s.latency_breakdown is not None]


def _causes(breakdown: LatencyBreakdown):
    """(cause, faster group, slower group, where) pairs a finding can act on: slow against typical runs,
    and the two sides of a step."""
    pairs = []
    if breakdown.cause is not None and breakdown.typical and breakdown.slow:
        pairs.append((breakdown.cause, breakdown.typical, breakdown.slow, "slow runs"))
    step = breakdown.step
    if step is not None:
        faster, slower = (step.before, step.after) if step.before.run_ms <= step.after.run_ms else (step.after, step.before)
        pairs.append((step.cause, faster, slower, f"the step at {step.at_s:.1f} s"))
    return pairs


def _strongest(report: Report, cause_id: str, min_ms: float = CAUSE_MIN_MS):
    """(session, cause, faster, slower, where) with the largest growth of `cause_id`, or None."""
    found = [(session, cause, faster, slower, where) for session, breakdown in _breakdowns(report)
             for cause, faster, slower, where in _causes(breakdown)
             if cause.id == cause_id and cause.explained_ms >= min_ms]
    return max(found, key=lambda item: item[1].explained_ms) if found else None


def _holder_text(holder: HeldBy) -> str:
    from ..signals.sched.breakdown import holder_name
    return holder_name(holder)


def _group_evidence(faster: RunGroup, slower: RunGroup, *fields_ms):
    evidence = {"typical_run_ms": faster.run_ms, "slow_run_ms": slower.run_ms, "slow_runs": slower.runs}
    for name, getter in fields_ms:
        evidence[f"typical_{name}"], evidence[f"slow_{name}"] = getter(faster), getter(slower)
    return evidence


def cpu_contention(report: Report):
    """Slow runs whose caller or workers were runnable while another thread had the CPU."""
    found = _strongest(report, "cpu-contention")
    if found is None:
        return None
    session, cause, faster, slower, where = found
    holder = cause.holder or slower.top_holder
    if holder is not None and holder.whose == PROFILER:
        return None     # the recording's own cost (or another profiler's): the breakdown's cause says so
    evidence = {"session": session.session, "where": where, "excess_ms": cause.excess_ms,
                "waited_ms": cause.explained_ms,
                **_group_evidence(faster, slower, ("caller_runnable_ms", lambda g: g.states_ms.get("runnable", 0.0)),
                                  ("workers_runnable_ms", lambda g: g.workers_ms.get("runnable", 0.0))),
                "held_by": [{"pid": h.pid, "tid": h.tid, "comm": h.comm, "ms": h.ms, "whose": h.whose,
                             "session": h.session} for h in slower.held_by[:3]]}
    usable = report.ort.usable_cores or report.pool_threads or 1
    name = _holder_text(holder) if holder else "another thread"
    whose = holder.whose if holder else None
    other_pool = next((h for h in slower.held_by if h.whose == OTHER_SESSION), None)
    if whose == OWN_SESSION and other_pool is not None:
        # its own threads and another session's: the process's pools together are more than its CPUs
        name = f"{name} and {_holder_text(other_pool)}"
        whose = OTHER_SESSION
    evidence["holder"] = {"pid": holder.pid, "tid": holder.tid, "comm": holder.comm, "ms": holder.ms,
                          "whose": holder.whose, "session": holder.session, "threads": holder.threads} if holder else None
    if whose == OTHER_SESSION:
        pool_lines = _shared_pool_lines(report, usable)
        lines: List[Line] = [Note(f"now: each session has its own pool; {name} held the CPU "
                                  f"{holder.ms:.1f} ms per slow run" if holder else "now: each session has its own pool"),
                             *pool_lines, Note("or keep per-session pools, smaller and not spinning:"),
                             intra_op_threads(max(1, usable // max(2, len(report.sessions))), active=False),
                             config_entry("session.intra_op.allow_spinning", "0", active=False)]
        tradeoff = ("One shared pool: as many threads as CPUs for all sessions, no idle worker of one session spinning "
                    "on the CPU another needs; runs of two sessions at the same moment share it. Smaller pools that "
                    "do not spin: less parallelism each, futex wake-ups instead of spin.")
    elif whose == OWN_SESSION:
        lines = [Note(f"now: {name}"), intra_op_threads(max(1, usable)),
                 config_entry("session.intra_op.allow_spinning", "0", active=False, lead="or")]
        tradeoff = "A pool no larger than the CPUs the process gets: fewer threads, no preemption among its own."
    else:
        lines = [Note(f"{name} held the CPU {holder.ms:.1f} ms per slow run:" if holder else
                      "another thread held the CPU:"),
                 Note("give this service CPUs of its own (taskset -c, a cpuset, container CPU requests)"),
                 Note("or run the other work at a lower priority (nice, SCHED_IDLE)")]
        if slower.sections != NO_POOL:      # a one-thread session has no pool to shrink
            lines.append(intra_op_threads(max(1, usable - 1), active=False, lead="or leave it a CPU"))
        tradeoff = ("Isolating CPUs removes the interference at the price of dedicated cores; fewer intra-op threads "
                    "keep the pool off the shared CPU at the price of parallel speed-up.")
    return Finding(
        id="cpu-contention", severity="critical" if cause.explained_ms >= faster.run_ms else "warning",
        title=(f"{where.capitalize()} of {_session_name(report, session.session)} waited {cause.explained_ms:.1f} ms "
               f"more per run for a CPU held by {name}"),
        evidence=evidence, remedy=_remedy(report, lines, session=session.session), tradeoff=tradeoff,
        explanation=cause.detail + (". The other thread is in another process: no session option removes it."
                                    if whose == OTHER_PROCESS else "."))


def straggler(report: Report):
    """Slow runs whose parallel sections waited for their last worker."""
    found = _strongest(report, "straggler")
    if found is None:
        return None
    session, cause, faster, slower, where = found
    workers = len(session.latency_breakdown.workers or ())
    current = _current([session], "session.dynamic_block_base", "0 (default)")
    return Finding(
        id="straggler", severity="warning",
        title=(f"In {where} of {_session_name(report, session.session)} the last worker of each parallel section "
               f"finished {cause.explained_ms:.1f} ms more per run after the others"),
        evidence={"session": session.session, "where": where, "excess_ms": cause.excess_ms,
                  **_group_evidence(faster, slower, ("straggler_ms", lambda g: g.straggler_ms),
                                    ("sections_per_run", lambda g: g.sections_per_run)),
                  "workers": workers, "dynamic_block_base": current},
        remedy=_remedy(report, [Note(_now(("dynamic_block_base", current))),
                                config_entry("session.dynamic_block_base", "4"),
                                intra_op_threads(max(1, workers), active=False, lead="or fewer threads")],
                       session=session.session),
        tradeoff="Dynamic blocks hand out smaller chunks so a slow worker delays less; a little more scheduling per loop.",
        explanation=cause.detail + ". The constant cost model splits work once per section; a slow or preempted "
                                   "worker then delays the whole run.")


def wake_up_delay(report: Report):
    """Pool workers that sleep between parallel sections must be woken for each: the delay to get them
    running, per section, against the CPU a short spin would cost."""
    candidates = []
    for session, breakdown in _breakdowns(report):
        typical = breakdown.typical
        wakeup = typical.wakeup if typical else None
        slow_cause = next((c for c, *_ in _causes(breakdown) if c.id == "wake-up-delay"), None)
        if typical is None or wakeup is None:
            continue
        own = round(wakeup.ms - wakeup.contended_ms, 3)
        if (own >= WAKEUP_MIN_MS and own >= WAKEUP_MIN_SHARE * typical.run_ms) or (
                slow_cause is not None and slow_cause.explained_ms >= CAUSE_MIN_MS):
            candidates.append((own, session, typical, wakeup, slow_cause))
    if not candidates:
        return None
    own, session, typical, wakeup, slow_cause = max(candidates, key=lambda item: item[0])
    rate = session.rate_per_s or 0.0
    gap = wakeup.gap_p90_us
    spinning = _current([session], "session.intra_op.allow_spinning", "1 (default)")
    # Spinning through a run's gaps costs at most their length, once per run (force_spinning_stop
    # ends the spin when run() returns).
    spin_cost_pct = round(wakeup.gaps_ms * rate / 10, 2) if wakeup.gaps_ms is not None and rate else None
    lines: List[Line] = [Note(_now(("allow_spinning", spinning)))]
    lines.append(config_entry("session.intra_op.allow_spinning", "1"))
    if _ort_version(report.ort) >= SPIN_DURATION_SINCE and gap:
        lines.append(config_entry("session.intra_op.spin_duration_us", str(int(-(-gap // 1))),
                                  comment="spin through a run's gaps between sections (their p90)"))
    lines.append(config_entry("session.force_spinning_stop", "1", comment="stop spinning when run() returns"))
    return Finding(
        id="wake-up-delay", severity="warning",
        title=(f"Waking sleeping pool workers costs {own:.2f} ms per run of {_session_name(report, session.session)} "
               f"({wakeup.per_run:.0f} wake-ups of {wakeup.mean_us:.0f} us, p95 {wakeup.p95_us:.0f} us; "
               f"{100 * own / max(typical.run_ms, 1e-9):.0f}% of a {typical.run_ms:.2f} ms run)"),
        evidence={"session": session.session, "wakeups_per_run": wakeup.per_run, "mean_us": wakeup.mean_us,
                  "p95_us": wakeup.p95_us, "max_us": wakeup.max_us, "wakeup_ms_per_run": own,
                  "run_ms": typical.run_ms, "gap_p90_us": gap, "gaps_ms_per_run": wakeup.gaps_ms,
                  "spin_cost_pct_max": spin_cost_pct, "allow_spinning": spinning,
                  "slow_runs_cause": slow_cause.detail if slow_cause else None},
        remedy=_remedy(report, lines, session=session.session),
        tradeoff=("A spin as long as the gaps between a run's sections keeps the workers awake through the run "
                  "(no wake-up per section) and force_spinning_stop ends it when run() returns: the CPU it costs is "
                  "at most the gaps' length per run"
                  + (f", here ~{spin_cost_pct:.1f}% of a core at {rate:.1f} runs/s" if spin_cost_pct is not None else "")
                  + "; the default spin (1<<20 iterations) costs far more between requests."),
        explanation=("With spinning off each parallel section wakes its workers through futex; each wake-up waits "
                     "for the scheduler to run the worker, measured here from the wake-up to the worker on CPU."))


# What latency-variance says when the scheduler named another cause than imbalance.
CAUSE_ADVICE = {
    "cpu-contention": "see the cpu-contention finding: who held the CPU and how to keep it",
    "cpu-throttling": "see the cpu-throttling finding: the quota against the pool's size",
    "wake-up-delay": "see the wake-up-delay finding: a short spin against the wake-ups",
    "blocked": "the caller waited on a lock (another thread's, the GIL): look at what else the process runs",
    "other": "the caller was off CPU for I/O, page faults or sleeps: look at the request path outside ORT",
    "on-cpu": "the slow runs computed longer: look at their inputs (sizes, shapes) and the model",
    "unknown": "the scheduler does not explain them either",
    "none": "the slow runs are within the runs' usual spread",
}


def _imbalance_without_scheduler(report: Report, session: SessionSummary) -> bool:
    """Without a scheduler breakdown: perf saw the caller spinning at the end of parallel sections
    (the caller-spin finding's condition) in a session with a pool."""
    if str((session.options or {}).get("intra_op_num_threads")) == "1":
        return False
    return caller_spin(report) is not None


def latency_variance(report: Report):
    """p99 far above p50. dynamic_block_base is the remedy only where the evidence points to imbalance
    (stragglers, or the caller spinning at the end of sections); otherwise the finding says what the
    slow runs were."""
    for session in report.sessions:
        ratio = session.variance_p99_p50
        if not (session.runs >= VARIANCE_MIN_RUNS and ratio and ratio >= VARIANCE_RATIO):
            continue
        current = _current([session], "session.dynamic_block_base", "0 (default)")
        breakdown = session.latency_breakdown
        evidence = {"session": session.session, "p50_ms": session.p50_ms, "p95_ms": session.p95_ms,
                    "p99_ms": session.p99_ms, "runs": session.runs, "dynamic_block_base": current}
        title = f"p99 is {ratio:.1f}x p50 ({session.p99_ms:.2f} vs {session.p50_ms:.2f} ms)"
        cause: Optional[Cause] = None
        if breakdown is not None:
            pairs = _causes(breakdown)
            named = [pair for pair in pairs if pair[0].id not in ("none", "unknown")]
            cause, _faster, _slower, where = (named or pairs)[0] if pairs else (None, None, None, None)
            if breakdown.step is not None:
                step = breakdown.step
                title += (f"; latency stepped at {step.at_s:.1f} s: {step.before.run_ms:.2f} ms before, "
                          f"{step.after.run_ms:.2f} ms after")
                evidence["step_at_s"] = step.at_s
            if cause is not None:
                evidence.update(cause=cause.id, cause_where=where, cause_detail=cause.detail)
        imbalance = (cause.id == "straggler" if cause is not None
                     else _imbalance_without_scheduler(report, session))
        if imbalance:
            return Finding(
                id="latency-variance", severity="warning", title=title, evidence=evidence,
                remedy=_remedy(report, [Note(_now(("dynamic_block_base", current))),
                                        config_entry("session.dynamic_block_base", "4")], session=session.session),
                tradeoff="ORT's documented best value against variance; a little more scheduling per parallel loop.",
                explanation=((cause.detail + ". ") if cause is not None else
                             "perf saw the caller spinning at the end of parallel sections (caller-spin). ")
                + "The constant cost model splits work once per section; a preempted or slow thread then "
                  "delays the whole run.")
        if cause is not None:
            what = f"{cause.detail}: {CAUSE_ADVICE.get(cause.id, '')}"
        else:
            what = ("no scheduler events were recorded and perf saw no imbalance (caller-spin): what made the slow "
                    "runs slow is not known from this run; `ortprof record --sched -- CMD` records them"
                    if breakdown is None else "no cause named")
        return Finding(
            id="latency-variance", severity="warning", title=title, evidence=evidence,
            remedy="\n".join(f"# {line}" for line in textwrap.wrap(what, 100)),
            tradeoff="None to weigh: the remedy is the cause's own (dynamic_block_base is for imbalance, not shown here).",
            explanation="What made the slow runs slow: " + what)
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
    Rule("cpu-contention", cpu_contention, needs=("runs", "sched")),
    Rule("straggler", straggler, needs=("runs", "sched")),
    Rule("wake-up-delay", wake_up_delay, needs=("runs", "sched")),
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
