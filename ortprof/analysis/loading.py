"""Run directory -> (RunManifest, Profile) and the side data the analysis needs.

Everything that reads a file lives here: run.json, perf.data (through
`perf script`), the hook's records, threads.csv, py-spy's output and the ORT
module's ELF headers. Nothing here decides what the data means.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..errors import InputError
from ..hook import read_hook_records
from ..model.manifest import RunManifest
from ..model.profile import Profile, RunSpan
from ..model.report import OrtContext
from ..recording import rundir
from ..recording.threadstats import read_thread_cpu_series
from .latency import SessionLatency, session_latencies
from .ort_profile import load_ort_profiles
from .perfscript import PerfScriptStream, parse_samples
from .pipeline import make_symbolizer
from .sampling import build_profile


@dataclass
class LoadedRun:
    manifest: RunManifest
    profile: Profile                        # empty (no threads) when there is no perf data
    context: OrtContext
    latencies: List[SessionLatency] = field(default_factory=list)
    proc_cpu_seconds: Dict[int, float] = field(default_factory=dict)   # tid -> CPU s in the window
    pyspy: Optional[object] = None          # analysis.pyspy.PySpyProfile
    symbolizer: Optional[object] = None
    perf_data: Optional[str] = None         # "present" | "missing" | "unreadable"
    unreadable: Optional[str] = None        # why perf.data could not be decoded
    perf_warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    run_path: Optional[str] = None
    hook_sessions: List[dict] = field(default_factory=list)   # the hook's `session` records
    ort_profiles: Optional[object] = None   # analysis.ort_profile.OrtProfileData (record --ort-profile)


def ort_context(manifest, notes):
    """Facts about the ORT module that was profiled; notes when it is gone or changed."""
    ort = manifest.ort
    context = OrtContext(ort_version=ort.get("version"), ort_module=manifest.ort_module,
                         build_id=ort.get("build_id"), symbol_status=ort.get("symbol_status"),
                         build_config=manifest.build_config, usable_cores=manifest.usable_cores)
    module = context.ort_module
    if module and not os.path.exists(module):
        notes.append(f"the profiled ORT module {module} is gone (another machine or a removed venv): "
                     "functions stay unnamed and spin detection by address is off")
        context.binary_missing = True
    elif module and context.build_id:
        from ..symbols.elfinfo import read_elf_info
        try:
            current = read_elf_info(module).build_id
        except InputError:
            current = None
        if current and current != context.build_id:
            notes.append(f"{module} changed since the recording (build-id differs): names may be wrong")
            context.binary_missing = True
    if module and not context.binary_missing:
        _add_optimization(context, module)
    return context


def _add_optimization(context, module):
    """How the module was compiled, from its DWARF producer (None on the stripped wheel)."""
    try:
        from ..symbols.producer import optimization_of
    except ImportError:
        return
    try:
        facts = optimization_of(module)
    except (InputError, OSError):
        return
    context.optimized, context.producer = facts.optimized, facts.producer


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


def load_run(run, samples=None, with_ort_symbols=True):
    """LoadedRun of `run` (a RunDirectory). `samples` overrides perf.data (tests, fixtures)."""
    manifest = run.read_manifest()
    if samples is None and manifest.window is None and manifest.status != "completed":
        # Profiling never began (the workload died or was stopped during warm-up):
        # a report would only show start-up CPU as if it were the service's.
        why = (manifest.errors or [f"status {manifest.status}"])[0]
        raise InputError(f"{run.path}: nothing was profiled: {why}")
    notes = list(manifest.notes)
    span = manifest.window_span
    context = ort_context(manifest, notes)
    symbolizer = make_symbolizer(with_ort_symbols and not context.binary_missing)
    if with_ort_symbols and context.binary_missing and context.build_id:
        symbolizer = _cached_symbolizer(context.build_id, notes) or symbolizer
    loaded = LoadedRun(manifest, Profile(window=span), context, symbolizer=symbolizer, notes=notes,
                       run_path=str(run.path))

    records = list(read_hook_records(run.file(rundir.HOOK_DIR)))
    loaded.latencies = session_latencies(records, span)
    loaded.hook_sessions = [r for r in records if r.get("event") == "session"]
    loaded.ort_profiles = load_ort_profiles(records, run.file(rundir.HOOK_DIR), span)
    hello = next((r for r in records if r.get("event") == "hello" and "mono" in r and "unix" in r), None)
    if not context.ort_version and loaded.latencies:
        context.ort_version = loaded.latencies[0].ort_version

    perf_data = run.file(rundir.PERF_DATA)
    if samples is not None:
        loaded.profile = build_profile(samples, symbolizer, span)
        loaded.perf_data = "present"
    elif perf_data.exists():
        loaded.perf_data = "present"
        try:
            stream = PerfScriptStream(perf_data)
            with stream as decoded:
                loaded.profile = build_profile(decoded, symbolizer, span)
            loaded.perf_warnings = stream.warnings()
            if not loaded.profile.has_samples and (stream.returncode or loaded.perf_warnings):
                loaded.unreadable = f"{perf_data} could not be decoded: {_perf_complaint(loaded.perf_warnings)}"
        except InputError as error:   # empty file
            loaded.unreadable = str(error)
        if loaded.unreadable:
            loaded.perf_data = "unreadable"
            loaded.profile = Profile(window=span)
            notes.append(loaded.unreadable + "; showing what the run has without it (latency, /proc CPU)")
    else:
        loaded.perf_data = "missing"

    profile = loaded.profile
    _use_futex_counts(run, manifest, profile, notes)
    if hello is not None:
        profile.unix_minus_mono = hello["unix"] - hello["mono"]
    profile.runs = [RunSpan(latency.session, tid, start, ms / 1000)
                    for latency in loaded.latencies
                    for start, ms, tid in zip(latency.starts, latency.durations_ms, latency.run_tids)]
    series = read_thread_cpu_series(run.file(rundir.THREADS_CSV), *(span or (None, None)))
    profile.thread_cpu.update(series)
    loaded.proc_cpu_seconds = {tid: max(0.0, points[-1][1] - points[0][1]) for tid, points in series.items()
                               if span is None or points[-1][0] >= span[0]}
    pyspy_path = run.file(rundir.PYSPY_OUT)
    if pyspy_path.exists():
        loaded.pyspy = _read_pyspy(pyspy_path, _pyspy_rate_hz(manifest), notes)
    return loaded


def _use_futex_counts(run, manifest, profile, notes):
    """Exact futex counts of the in-kernel counters, when the run has them (futex method "bpftrace")."""
    from ..signals.futex import BPF_METHOD, FUTEX_BPF_OUT, FutexPlan
    from .futex_counts import load_futex_counts
    plan = manifest.section("futex", FutexPlan) or FutexPlan()
    path = run.file(FUTEX_BPF_OUT)
    if plan.method != BPF_METHOD or not path.exists():
        return
    try:
        counts = load_futex_counts(path)
    except InputError as error:
        notes.append(str(error))
        return
    if not counts.complete:
        notes.append("bpftrace stopped before its final print: futex counts stop at its last 1 s snapshot")
    profile.futex.use_counts(counts.threads, plan.stack_sample_period)


def _pyspy_rate_hz(manifest):
    """py-spy's sampling rate, from the command line the recorder ran."""
    pyspy = manifest.profilers.get("py-spy")
    argv = pyspy.command if pyspy is not None else []
    for flag, value in zip(argv, argv[1:]):
        if flag == "--rate":
            return float(value)
    return None


def _read_pyspy(path, rate_hz, notes):
    from .pyspy import read_pyspy
    try:
        return read_pyspy(path, rate_hz)
    except InputError as error:
        notes.append(f"py-spy output unreadable: {error}")
        return None


def load_perf_script(path):
    """A LoadedRun straight from saved `perf script` text (e.g. captures from another machine)."""
    import lzma
    opener = lzma.open if str(path).endswith(".xz") else open
    symbolizer = make_symbolizer(False, source_lines=False)
    try:
        with opener(path, "rt", errors="replace") as stream:
            profile = build_profile(parse_samples(stream), symbolizer)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise InputError(f"{path}: cannot read perf script text ({exc})")
    return LoadedRun(RunManifest(), profile, OrtContext(), symbolizer=symbolizer, perf_data="present",
                     run_path=str(path))
