"""LoadedRun (RunManifest + Profile + side data) -> Report.

One path for every run: sections that need perf samples are computed from the
profile when it has samples and are otherwise left empty with the reason in
`empty_sections`; findings run on whatever sections exist, so a py-spy-only
run or one whose perf.data is broken still gets throttling, oversubscription,
latency-variance, debug-build and the Python findings.
"""
from collections import Counter

from ..model.report import CgroupSection, FutexSection, PythonSection, PythonStack, PythonThread, Report, \
    SessionSummary, Totals
from ..signals.cgroup import CgroupRecord
from ..signals.futex import FutexProbe
from . import roles as roles_mod
from .diagnose import diagnose
from .loading import load_perf_script, load_run
from .operators import node_threads, operators_section, pool_workers
from .pipeline import assign_roles, futex_section, hot_paths, hot_spots, proc_only_threads, thread_table, totals

SAMPLE_SECTIONS = ("threads.categories", "totals", "hot_paths", "top_functions", "hot_spots")


def cgroup_section(cgroup: CgroupRecord):
    before, after = cgroup.stat_before or {}, cgroup.stat_after or {}
    section = CgroupSection(quota_cpus=(cgroup.limit or {}).get("cpus"))
    if after.get("nr_throttled") is not None and before.get("nr_throttled") is not None:
        section.throttled_periods = after["nr_throttled"] - before["nr_throttled"]
        section.throttled_ms = round((after.get("throttled_usec", 0) - before.get("throttled_usec", 0)) / 1000, 1)
        if after.get("nr_periods") is not None and before.get("nr_periods") is not None:
            section.periods = after["nr_periods"] - before["nr_periods"]
    return section


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


def _why_no_samples(loaded):
    if loaded.perf_data == "unreadable":
        return loaded.unreadable
    if loaded.perf_data == "missing":
        return "no perf data in this run (py-spy only, --profiler none, or perf failed): CPU categories need perf"
    return "perf recorded no CPU samples in the window"


def _futex_missing_reason(loaded, futex):
    probe = loaded.manifest.section("futex_probe", FutexProbe)
    if probe is not None and probe.usable is False:
        reason = f"futex tracepoints were not usable when recording: {probe.reason or 'unknown reason'}"
        return reason + (f" (fix: {probe.fix})" if probe.fix else "")
    if loaded.perf_data != "present" or loaded.unreadable:
        return "no futex figures without perf data"
    if not futex.recorded:
        return "the recording has no futex events (recorded with --no-futex, or tracepoints unavailable)"
    return None


def python_section(pyspy, seconds, top=5):
    """The py-spy view: each thread's Python time inside and outside ORT's run()."""
    if pyspy is None:
        return PythonSection()
    rate = pyspy.rate_hz or 100.0
    scale = 100.0 / (rate * seconds)
    threads = [PythonThread(
        tid=thread.tid, name=thread.name, samples=thread.samples, cpu_pct=round(thread.samples * scale, 2),
        in_run_pct=round(thread.in_run_samples * scale, 2),
        outside_run_pct=round(thread.python_busy_samples * scale, 2),
        waiting_pct=round(thread.waiting_samples * scale, 2),
        top_stacks=[PythonStack(";".join(map(str, stack.frames)), stack.kind, round(stack.samples * scale, 2))
                    for stack in thread.top_stacks[:top]])
        for thread in sorted(pyspy.threads, key=lambda t: -t.samples)]
    return PythonSection(source="py-spy", rate_hz=rate, threads=threads)


def analyze(loaded, top=15):
    """The Report of a LoadedRun. Roles are written back into its profile's threads."""
    manifest, profile, context = loaded.manifest, loaded.profile, loaded.context
    seconds = manifest.window_seconds
    if not seconds:
        start, end = profile.span()
        seconds = (end - start) or 1.0
    proc_cpu = {tid: 100 * used / seconds for tid, used in loaded.proc_cpu_seconds.items()}
    proc_total = round(sum(proc_cpu.values()), 2) if proc_cpu else None
    sessions = [SessionSummary(**latency.summary(seconds)) for latency in loaded.latencies]
    inferences = sum(s.runs for s in sessions)
    caller_tids = set().union(*(latency.caller_tids for latency in loaded.latencies)) if loaded.latencies else set()
    report = Report(window_seconds=round(seconds, 3), ort=context, sessions=sessions,
                    cgroup=cgroup_section(manifest.section("cgroup", CgroupRecord) or CgroupRecord()), run=loaded.run_path, command=manifest.command,
                    status=manifest.status, perf_warnings=loaded.perf_warnings[-5:],
                    unreadable_perf_data=loaded.unreadable)
    ort_profiles = loaded.ort_profiles
    pools = roles_mod.pool_threads(loaded.hook_sessions, node_threads(ort_profiles) if ort_profiles else None)
    if profile.has_samples:
        assign_roles(profile, caller_tids)
        roles_mod.apply_pool_roles(profile, pools)
    if ort_profiles is not None:
        # before hot paths: it labels the stripped frames they show
        report.operators = operators_section(profile, ort_profiles, pools, seconds, top)
    if profile.has_samples:
        report.threads = thread_table(profile, seconds, proc_cpu, caller_tids)
        report.totals = totals(report.threads, proc_total)
        report.hot_paths, report.top_functions = hot_paths(profile, seconds, top)
        if loaded.symbolizer is not None:
            report.hot_spots = hot_spots(profile, seconds, loaded.symbolizer)
        report.samples = profile.cpu_samples
    else:
        report.threads = proc_only_threads(proc_cpu, caller_tids)
        report.totals = Totals(proc_cpu_pct=proc_total)
        why = _why_no_samples(loaded)
        report.empty_sections.update(dict.fromkeys(SAMPLE_SECTIONS, why))
    roles_by_tid = {row.tid: row.role for row in report.threads}
    report.pool_workers = pool_workers(pools, report.threads) if pools else None
    report.futex = (futex_section(profile, seconds, inferences, roles_by_tid) if profile.has_samples or
                    profile.futex.threads else FutexSection())
    report.futex.missing_reason = _futex_missing_reason(loaded, report.futex)
    if report.futex.missing_reason:
        report.empty_sections["futex"] = report.futex.missing_reason
    if not sessions:
        report.empty_sections["sessions"] = ("no run() records from the startup hook (a workload that is not "
                                             "Python, or --pid without the hook)")
    report.python = python_section(loaded.pyspy, seconds)
    report.pool_threads = _pool_threads(sessions, report.threads, report.pool_workers,
                                       (manifest.environment.get("cpu") or {}).get("physical_cores"))
    notes = list(loaded.notes)
    if report.totals.mismatch:
        notes.append(f"perf's CPU ({report.totals.cpu_pct:.1f}%) and /proc's "
                     f"({proc_total:.1f}%) differ by {report.totals.mismatch_pct:+.0f}%")
    report.notes = notes
    report.findings = diagnose(report)
    return report


def build_report(run, samples=None, with_ort_symbols=True):
    """(Profile, Report) of `run` (a RunDirectory). `samples` overrides perf.data (tests, fixtures)."""
    loaded = load_run(run, samples=samples, with_ort_symbols=with_ort_symbols)
    return loaded.profile, analyze(loaded)


def report_from_perf_script(path):
    """The report JSON straight from saved `perf script` text (e.g. captures), no run directory."""
    return analyze(load_perf_script(path)).to_json()
