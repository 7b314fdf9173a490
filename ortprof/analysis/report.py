"""LoadedRun (RunManifest + Profile + side data) -> Report.

One path for every run: each signal fills its report section from what it
loaded (ortprof.signals, in REPORT_ORDER); a signal the run lacks leaves its
sections empty and says why in `empty_sections`. Findings then run on the
typed Report, so a py-spy-only run or one whose perf.data is broken still gets
throttling, oversubscription, latency-variance, debug-build and the Python
findings.
"""
from collections import Counter

from ..model.report import Report
from ..signals import SIGNALS, reporting_signals
from . import roles as roles_mod
from .diagnose import diagnose
from .loading import derive, load_perf_script, load_run
from .operators import pool_workers


def _pool_threads(sessions, threads, pool_workers, physical_cores):
    """The largest intra-op pool of a session: the option when set, else the session's intra-op
    workers + its caller (workers tied to sessions) or all workers seen + the caller, else ORT's
    default for a session the hook saw (one thread per physical core)."""
    for session in sessions:
        value = (session.options or {}).get("intra_op_num_threads")
        if value:
            return int(value)
    if pool_workers:
        per_session = Counter(w.session for w in pool_workers if w.pool == "intra-op")
        if per_session:
            return max(per_session.values()) + 1
    workers = sum(1 for t in threads if t.role == roles_mod.INTRA_WORKER)
    if workers:
        return workers + 1
    return physical_cores if sessions and physical_cores else None


def analyze(loaded, top=15):
    """The Report of a LoadedRun. Roles are written back into its profile's threads."""
    derive(loaded)
    manifest = loaded.manifest
    report = Report(window_seconds=round(loaded.window_seconds, 3), ort=loaded.context, run=loaded.run_path,
                    command=manifest.command, status=manifest.status, perf_warnings=loaded.perf_warnings[-5:],
                    unreadable_perf_data=loaded.unreadable)
    for signal in reporting_signals():
        signal.report(loaded, report, top)
    for signal in SIGNALS:
        why = signal.missing(loaded, report) if signal.missing is not None else None
        if why and signal.name in loaded.unreadable_signals:
            why = loaded.unreadable_signals[signal.name]
        if why:
            report.empty_sections.update(dict.fromkeys(signal.report_sections, why))
    report.pool_workers = pool_workers(loaded.pools, report.threads) if loaded.pools else None
    report.pool_threads = _pool_threads(report.sessions, report.threads, report.pool_workers,
                                        (manifest.environment.get("cpu") or {}).get("physical_cores"))
    report.notes = list(loaded.notes)
    if report.totals.mismatch:
        report.notes.append(f"perf's CPU ({report.totals.cpu_pct:.1f}%) and /proc's "
                            f"({loaded.proc_cpu_total:.1f}%) differ by {report.totals.mismatch_pct:+.0f}%")
    report.findings = diagnose(report)
    return report


def build_report(run, samples=None, with_ort_symbols=True):
    """(Profile, Report) of `run` (a RunDirectory). `samples` overrides perf.data (tests, fixtures)."""
    loaded = load_run(run, samples=samples, with_ort_symbols=with_ort_symbols)
    report = analyze(loaded)
    loaded.profile.sched = getattr(loaded, "sched_timeline", None)   # the exporters get the profile only
    return loaded.profile, report


def report_from_perf_script(path):
    """The report JSON straight from saved `perf script` text (e.g. captures), no run directory."""
    return analyze(load_perf_script(path)).to_json()
