"""Per-session latency from the hook's run() records."""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple


def percentile(sorted_values, q):
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, int(round(q / 100 * (len(sorted_values) - 1)))))
    return sorted_values[rank]


@dataclass
class SessionLatency:
    session: int
    pid: int
    model: Optional[str] = None
    providers: Optional[list] = None
    ort_version: Optional[str] = None
    options: dict = field(default_factory=dict)
    durations_ms: list = field(default_factory=list)
    starts: list = field(default_factory=list)
    caller_tids: set = field(default_factory=set)
    run_tids: list = field(default_factory=list)     # the thread of each run, beside starts
    source: str = "hook"                             # hook | attach | capi (signals.runs.SessionSummary)
    handle: Optional[str] = None
    options_known: bool = True

    def summary(self, window_seconds=None):
        ordered = sorted(self.durations_ms)
        p50 = percentile(ordered, 50)
        p99 = percentile(ordered, 99)
        span = window_seconds or ((self.starts[-1] - self.starts[0]) if len(self.starts) > 1 else None)
        return {
            "session": self.session, "pid": self.pid, "model": self.model, "providers": self.providers,
            "ort_version": self.ort_version, "options": self.options, "runs": len(ordered),
            "rate_per_s": round(len(ordered) / span, 3) if span else None,
            "mean_ms": round(sum(ordered) / len(ordered), 3) if ordered else None,
            "p50_ms": _round(p50), "p95_ms": _round(percentile(ordered, 95)),
            "p99_ms": _round(p99), "max_ms": _round(ordered[-1] if ordered else None),
            "variance_p99_p50": round(p99 / p50, 2) if p50 else None,
            "caller_tids": sorted(self.caller_tids),
            "source": self.source, "handle": self.handle, "options_known": self.options_known,
        }


def _round(value):
    return None if value is None else round(value, 3)


def session_latencies(records, window=None):
    """SessionLatency per (pid, session) from hook records; runs limited to `window` (start, end) if given."""
    sessions: Dict[Tuple[Optional[int], str, Optional[int]], SessionLatency] = {}  # (pid, source, session) -> its latency
    for record in records:
        event = record.get("event")
        if event == "session":
            key = (record.get("pid"), record.get("source", "hook"), record.get("session"))
            latency = sessions.setdefault(key, SessionLatency(record.get("session"), record.get("pid")))
            latency.model, latency.providers = record.get("model"), record.get("providers")
            latency.ort_version, latency.options = record.get("ort_version"), record.get("options") or {}
            latency.source, latency.handle = record.get("source", "hook"), record.get("handle")
            latency.options_known = record.get("options_known", True)
        elif event == "runs":
            for session, start, duration, tid, _kind in record.get("runs", ()):
                if window and not (window[0] <= start <= window[1]):
                    continue
                key = (record.get("pid"), record.get("source", "hook"), session)
                latency = sessions.setdefault(key, SessionLatency(session, record.get("pid"),
                                                                  source=record.get("source", "hook")))
                latency.durations_ms.append(duration * 1000)
                latency.starts.append(start)
                latency.caller_tids.add(tid)
                latency.run_tids.append(tid)
    return [sessions[key] for key in sorted(sessions, key=lambda k: (k[0] or 0, k[1], k[2] or 0))]
