"""Assemble the report of one run directory (or of bare perf script text).

Pure steps in order; each section is plain data so renderers only render:
  load run -> decode + aggregate samples -> roles/categories -> futex, latency,
  hot paths -> findings.
"""
import os
from pathlib import Path

from ..errors import InputError
from ..hook import read_hook_records
from ..recording import rundir
from ..recording.threadstats import read_thread_cpu
from . import roles as roles_mod
from .diagnose import diagnose
from .latency import session_latencies
from .perfscript import PerfScriptStream, parse_samples
from .pipeline import (CATEGORIES, aggregate_samples, folded_lines, futex_table, hot_paths, hot_spots, make_symbolizer,
                       thread_table, totals)

SCHEMA = "ortprof.report/1"


def _cgroup_section(manifest, window_seconds):
    cgroup = manifest.get("cgroup") or {}
    before, after = cgroup.get("stat_before") or {}, cgroup.get("stat_after") or {}
    limit = cgroup.get("limit") or {}
    section = {"quota_cpus": limit.get("cpus"), "throttled_periods": None, "throttled_ms": None}
    if after.get("nr_throttled") is not None and before.get("nr_throttled") is not None:
        section["throttled_periods"] = after["nr_throttled"] - before["nr_throttled"]
        section["throttled_ms"] = round((after.get("throttled_usec", 0) - before.get("throttled_usec", 0)) / 1000, 1)
        if after.get("nr_periods") is not None and before.get("nr_periods") is not None:
            section["periods"] = after["nr_periods"] - before["nr_periods"]
    return section


def _binary_context(manifest, notes):
    """Facts about the ORT module that was profiled; notes when it is gone or changed."""
    environment = manifest.get("environment") or {}
    ort = environment.get("ort") or {}
    module = ort.get("native_module") or ort.get("path")
    context = {"ort_version": ort.get("version"), "ort_module": module, "build_id": ort.get("build_id"),
               "symbol_status": ort.get("symbol_status"),
               "build_config": (manifest.get("ort_build") or {}).get("config"),
               "usable_cores": len(environment.get("affinity") or []) or (environment.get("cpu") or {}).get("logical_cores")}
    if module and not os.path.exists(module):
        notes.append(f"the profiled ORT module {module} is gone (another machine or a removed venv): "
                     "functions stay unnamed and spin detection by address is off")
        context["binary_missing"] = True
    elif module and context["build_id"]:
        from ..symbols.elfinfo import read_elf_info
        try:
            current = read_elf_info(module).build_id
        except InputError:
            current = None
        if current and current != context["build_id"]:
            notes.append(f"{module} changed since the recording (build-id differs): names may be wrong")
            context["binary_missing"] = True
    return context


def _cached_symbolizer(build_id, notes):
    """Names and spin sites of a module that is gone, from the symbol cache of its build-id."""
    from ..symbols.resolver import Symbolizer
    from .stacks import StackSymbolizer
    cached = Symbolizer().for_build_id(build_id)
    if cached is None:
        notes.append(f"no symbol cache for build-id {build_id} either: spin-wait cannot be told from compute "
                     "in ORT's frames (report on the machine that recorded, or keep its ~/.cache/ortprof)")
        return None
    notes.append(f"using the symbol cache of build-id {build_id} (names and spin sites)")
    return StackSymbolizer(lambda dso: cached)


def _perf_complaint(warnings):
    """perf's own words on a broken file, e.g. a perf record that was killed."""
    for warning in warnings:
        lowered = warning.lower()
        if "data size" in lowered or "properly terminated" in lowered:
            return "perf record did not finish writing it (killed?)"
        if "incompatible" in lowered or "truncated" in lowered or "corrupt" in lowered or "invalid" in lowered:
            return f"truncated or corrupt ({warning})"
    return warnings[-1] if warnings else "perf script produced no samples"


def _pool_threads(sessions, threads):
    """Intra-op pool size: the option when set, else workers seen + the caller."""
    for session in sessions:
        value = (session.get("options") or {}).get("intra_op_num_threads")
        if value:
            return int(value)
    workers = sum(1 for t in threads if t["role"] == roles_mod.INTRA_WORKER)
    return workers + 1 if workers else None


def build_report(run, samples=None, with_ort_symbols=True, folded=None):
    """The report dict of `run` (a RunDirectory). `samples` overrides perf.data (tests, fixtures).
    `folded`, a callable taking lines, receives folded stacks."""
    manifest = run.manifest()
    notes = list(manifest.get("notes") or [])
    window = manifest.get("window") or {}
    span = (window["start_mono"], window["end_mono"]) if "end_mono" in window else None
    seconds = window.get("seconds")
    context = _binary_context(manifest, notes)
    symbolizer = make_symbolizer(with_ort_symbols and not context.get("binary_missing"))
    if with_ort_symbols and context.get("binary_missing") and context.get("build_id"):
        symbolizer = _cached_symbolizer(context["build_id"], notes) or symbolizer

    records = list(read_hook_records(run.file(rundir.HOOK_DIR)))
    latencies = session_latencies(records, span)
    caller_tids = set().union(*(latency.caller_tids for latency in latencies)) if latencies else set()
    if not context["ort_version"] and latencies:
        context["ort_version"] = latencies[0].ort_version

    perf_data = run.file(rundir.PERF_DATA)
    warnings = []
    unreadable = None
    if samples is not None:
        aggregate = aggregate_samples(samples, symbolizer, span)
    elif perf_data.exists():
        try:
            stream = PerfScriptStream(perf_data)
            with stream as decoded:
                aggregate = aggregate_samples(decoded, symbolizer, span)
            warnings = stream.warnings()
            if aggregate.cpu_samples == 0 and (stream.returncode or warnings):
                unreadable = f"{perf_data} could not be decoded: {_perf_complaint(warnings)}"
        except InputError as error:   # empty file
            unreadable = str(error)
        if unreadable:
            aggregate = None
            notes.append(unreadable + "; showing what the run has without it (latency, /proc CPU)")
    else:
        aggregate = None
        notes.append("no perf data in this run (py-spy only, or perf failed): CPU categories need perf")

    if not seconds:
        seconds = (aggregate.last_time - aggregate.first_time) if aggregate and aggregate.first_time else 1.0
    proc_cpu = {int(tid): 100 * used / seconds for tid, used in
                read_thread_cpu(run.file(rundir.THREADS_CSV), *(span or (None, None))).items()}
    report = assemble(aggregate, seconds, latencies, proc_cpu, caller_tids, context,
                      _cgroup_section(manifest, seconds), folded, symbolizer)
    report.update(run=str(run.path), command=manifest.get("command"), status=manifest.get("status"),
                  notes=notes + report["notes"], perf_warnings=warnings[-5:], unreadable_perf_data=unreadable)
    return report


def assemble(aggregate, seconds, latencies=(), proc_cpu=None, caller_tids=frozenset(), context=None,
             cgroup=None, folded=None, symbolizer=None):
    """Sections and findings from an aggregate (None: no perf data) and the run's side data."""
    context = context or {}
    proc_cpu = proc_cpu or {}
    notes = []
    proc_total = round(sum(proc_cpu.values()), 2) if proc_cpu else None
    sessions = [latency.summary(seconds) for latency in latencies]
    inferences = sum(s["runs"] for s in sessions)
    report = {"schema": SCHEMA, "window_seconds": round(seconds, 3), "ort": context, "sessions": sessions}
    if aggregate is not None:
        threads = thread_table(aggregate, seconds, proc_cpu, caller_tids)
        roles_by_tid = {row["tid"]: row["role"] for row in threads}
        paths, functions = hot_paths(aggregate, seconds, roles_by_tid)
        report.update(threads=threads, totals=totals(threads, proc_total),
                      futex=futex_table(aggregate, seconds, inferences, roles_by_tid),
                      hot_paths=paths, top_functions=functions,
                      hot_spots=hot_spots(aggregate, seconds, symbolizer) if symbolizer is not None else [],
                      samples=aggregate.cpu_samples)
        if folded is not None:
            folded(folded_lines(aggregate, roles_by_tid))
    else:
        threads = [{"tid": tid, "role": roles_mod.CALLER if tid in caller_tids else roles_mod.UNKNOWN,
                    "cpu_pct": None, "proc_cpu_pct": round(cpu, 2), "samples": 0, "categories": {}}
                   for tid, cpu in sorted(proc_cpu.items())]
        report.update(threads=threads,
                      totals=dict({f"{name}_pct": None for name in ("cpu", *CATEGORIES)}, proc_cpu_pct=proc_total,
                                  mismatch_pct=None, mismatch=False),
                      futex={"recorded": False, "calls": None, "calls_per_s": None, "time_ms_per_s": None,
                             "calls_per_inference": None, "threads": [], "top_stacks": []},
                      hot_paths=[], top_functions={"self": [], "total": []}, hot_spots=[],
                      samples=0)
    report["cgroup"] = cgroup or {}
    report["pool_threads"] = _pool_threads(sessions, report["threads"])
    report["findings"] = [f.to_json() for f in diagnose(report, context)] if aggregate is not None else []
    if report["totals"].get("mismatch"):
        notes.append(f"perf's CPU ({report['totals']['cpu_pct']:.1f}%) and /proc's "
                     f"({proc_total:.1f}%) differ by {report['totals']['mismatch_pct']:+.0f}%")
    report["notes"] = notes
    return report


def report_from_perf_script(path, window_seconds=None):
    """A report straight from saved `perf script` text (e.g. shared fixtures), no run directory."""
    import lzma
    opener = lzma.open if str(path).endswith(".xz") else open
    symbolizer = make_symbolizer(False, source_lines=False)
    with opener(path, "rt", errors="replace") as stream:
        aggregate = aggregate_samples(parse_samples(stream), symbolizer)
    seconds = window_seconds or max(1e-9, (aggregate.last_time or 0) - (aggregate.first_time or 0))
    report = assemble(aggregate, seconds, symbolizer=symbolizer)
    report["run"] = str(Path(path))
    return report
