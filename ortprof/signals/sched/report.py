"""The sched signal's report hooks: each session's latency breakdown (why its slow runs were slow),
and why it is missing."""
from typing import Dict, List, Optional

from .breakdown import SessionThreads, session_breakdown, why_not

INTRA_SPINNING_KEY = "session.intra_op.allow_spinning"


def _spans_by_session(loaded) -> Dict[int, list]:
    spans: Dict[int, list] = {}
    for span in loaded.profile.runs:
        spans.setdefault(span.session, []).append(span)
    return spans


def _spinning(summary) -> Optional[bool]:
    """Whether the session's intra-op workers spin between sections; None: its options are unknown."""
    if not summary.options_known:
        return None
    value = ((summary.options or {}).get("config") or {}).get(INTRA_SPINNING_KEY)
    return value is None or str(value) != "0"


def _workers(summary, loaded, report) -> Optional[List[int]]:
    """The session's pool workers: tied to it by its creation (the hook); none for a session the hook
    saw start no thread or set to one thread; with a single session, every pool worker of the process;
    otherwise unknown."""
    pools = loaded.pools or {}
    tied = sorted(tid for tid, pool in pools.items() if pool.session == summary.session)
    if tied:
        return tied
    record = next((r for r in loaded.hook_sessions if r.get("session") == summary.session
                   and r.get("pid") in (None, summary.pid)), None)
    if record is not None and record.get("new_threads") == []:
        return []
    options = summary.options or {}
    if str(options.get("intra_op_num_threads")) == "1" and "PARALLEL" not in str(options.get("execution_mode") or "").upper():
        return []
    if len(report.sessions) == 1 and loaded.profile.threads:
        from ...analysis import roles     # roles are the profile's once derived, before the report hooks
        return sorted(tid for tid, thread in loaded.profile.threads.items()
                      if thread.role in (roles.INTRA_WORKER, roles.INTER_WORKER)) or None
    return None


def fill(loaded, report, top):
    """sessions[].latency_breakdown from the scheduler timeline joined with each session's run() spans."""
    timeline = getattr(loaded, "sched_timeline", None)
    if timeline is None:
        return
    spans = _spans_by_session(loaded)
    tid_session = {tid: pool.session for tid, pool in (loaded.pools or {}).items()}
    for summary in report.sessions:
        for tid in summary.caller_tids or ():
            tid_session.setdefault(tid, summary.session)
    for summary in report.sessions:
        # A thread that calls several sessions' run() is this session's caller during its runs.
        own = {**tid_session, **{tid: summary.session for tid in summary.caller_tids or ()}}
        threads = SessionThreads(summary.session, _workers(summary, loaded, report), _spinning(summary), own)
        summary.latency_breakdown = session_breakdown(timeline, spans.get(summary.session, ()), threads)


def missing_reason(loaded, report) -> Optional[str]:
    """Why no session has a latency breakdown (None when one has)."""
    if any(summary.latency_breakdown is not None for summary in report.sessions):
        return None
    timeline = getattr(loaded, "sched_timeline", None)
    if timeline is None and getattr(loaded, "sched_missing", None):
        return loaded.sched_missing          # why the capture has no timeline, as it says it
    if timeline is not None and not report.sessions:
        return "no run() was timed in the window, so there are no runs to break down"
    spans = _spans_by_session(loaded)
    reasons = [why_not(timeline, spans.get(summary.session, ())) for summary in report.sessions] or [why_not(timeline, ())]
    distinct = list(dict.fromkeys(reason for reason in reasons if reason))
    return "; ".join(distinct) if distinct else None
