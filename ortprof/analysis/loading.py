"""Run directory -> LoadedRun: the RunManifest, the Profile and the side data the analysis needs.

Each signal (ortprof.signals) loads its own files into the LoadedRun, in the
registry's order; this module reads what is common to all of them (run.json,
the ORT module's ELF facts and symbolizer) and what derives from several
(window length, /proc CPU in %, run() callers, pool workers). Nothing here
decides what the data means.
"""
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

from ..errors import InputError
from ..model.manifest import RunManifest
from ..model.profile import Profile
from ..model.report import OrtContext
from ..signals import SIGNALS
from .perfscript import parse_samples
from .pipeline import make_symbolizer
from .sampling import build_profile


@dataclass
class LoadedRun:
    manifest: RunManifest
    profile: Profile                        # empty (no threads) when there is no perf data
    context: OrtContext
    latencies: List[Any] = field(default_factory=list)       # analysis.latency.SessionLatency per session
    proc_cpu_seconds: Dict[int, float] = field(default_factory=dict)   # tid -> CPU s in the window
    pyspy: Optional[Any] = None             # analysis.pyspy.PySpyProfile
    symbolizer: Optional[Any] = None        # analysis.stacks.StackSymbolizer
    perf_data: Optional[str] = None         # "present" | "missing" | "unreadable"
    unreadable: Optional[str] = None        # why perf.data could not be decoded
    perf_warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    run_path: Optional[str] = None
    hook_records: List[dict] = field(default_factory=list)    # every record the hook wrote
    hook_sessions: List[dict] = field(default_factory=list)   # the hook's `session` records
    ort_profiles: Optional[Any] = None      # analysis.ort_profile.OrtProfileData (record --ort-profile)
    given_samples: Optional[Any] = None     # decoded samples given instead of perf.data (tests, fixtures)
    unreadable_signals: Dict[str, str] = field(default_factory=dict)   # signal name -> why it did not load
    sched_timeline: Optional[Any] = None    # signals.sched.timeline.SchedTimeline (None: sched_missing says why)
    sched_missing: Optional[str] = None
    # derived from several signals once all are loaded (derive(), the analysis' first step)
    window_seconds: float = 1.0
    proc_cpu_pct: Dict[int, float] = field(default_factory=dict)    # tid -> % of one core, from /proc
    proc_cpu_total: Optional[float] = None
    caller_tids: Set[int] = field(default_factory=set)
    pools: Optional[Any] = None             # roles.pool_threads(): workers tied to their session's pool


def ort_context(manifest, notes, run=None):
    """Facts about the ORT module that was profiled, and which client loaded it (from `run`'s
    maps.txt and the process's executable); notes when the module is gone or changed."""
    ort = manifest.ort
    context = OrtContext(ort_version=ort.get("version"), ort_module=manifest.ort_module,
                         build_id=ort.get("build_id"), symbol_status=ort.get("symbol_status"),
                         build_config=manifest.build_config, usable_cores=manifest.usable_cores,
                         client=_client(manifest, run))
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


def _client(manifest, run):
    """remedies.detect_client on what the profiled process had mapped and its executable."""
    from ..signals.samples import MAPS
    from .remedies import detect_client
    maps = None
    if run is not None:
        try:
            maps = run.file(MAPS).read_text(errors="replace")
        except OSError:
            pass
    exe = (manifest.environment.get("process") or {}).get("exe")
    # "installed": the module this Python would import, not one the process loaded
    module = manifest.ort_module if manifest.ort.get("source") != "installed" else None
    return detect_client(maps, exe, module)


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
    try:
        cached = Symbolizer().for_build_id(build_id)
    except InputError as error:
        notes.append(f"{error}: spin-wait cannot be told from compute in ORT's frames "
                     "(report on the machine that recorded, or keep its ~/.cache/ortprof)")
        return None
    notes.append(f"using the symbol cache of build-id {build_id} (names and spin sites)")
    return StackSymbolizer(lambda dso: cached, notes=notes)


def load_run(run, samples=None, with_ort_symbols=True):
    """LoadedRun of `run` (a RunDirectory). `samples` overrides perf.data (tests, fixtures)."""
    manifest = run.read_manifest()
    if samples is None and manifest.window is None and manifest.status != "completed":
        # Profiling never began (the workload died or was stopped during warm-up):
        # a report would only show start-up CPU as if it were the service's.
        why = (manifest.errors or [f"status {manifest.status}"])[0]
        raise InputError(f"{run.path}: nothing was profiled: {why}")
    notes = list(manifest.notes)
    context = ort_context(manifest, notes, run)
    symbolizer = make_symbolizer(with_ort_symbols and not context.binary_missing, notes=notes)
    if with_ort_symbols and context.binary_missing and context.build_id:
        symbolizer = _cached_symbolizer(context.build_id, notes) or symbolizer
    loaded = LoadedRun(manifest, Profile(window=manifest.window_span), context, symbolizer=symbolizer,
                       notes=notes, run_path=str(run.path), given_samples=samples)
    for signal in SIGNALS:
        if signal.load is not None:
            _load_signal(signal, run, loaded)
    return loaded


def _load_signal(signal, run, loaded):
    """A signal whose files cannot be read (unreadable, not text, torn in a way its reader does
    not skip) leaves its figures out, with a note saying which and why; the others still load."""
    try:
        signal.load(run, loaded)
    except (InputError, OSError, ValueError) as error:
        why = f"{type(error).__name__}: {error}" if not isinstance(error, InputError) else str(error)
        loaded.unreadable_signals[signal.name] = f"its files could not be read ({why})"
        loaded.notes.append(f"the {signal.name} signal's files could not be read ({why}): the report has none of "
                            f"its figures ({signal.description})")


def derive(loaded):
    """The figures several signals share: the window's length, /proc CPU in % of one core, the
    threads that called run(), and each session's pool workers. Roles are written into the profile."""
    from ..signals.runs import caller_tids
    from . import roles as roles_mod
    from .operators import node_threads
    from .pipeline import assign_roles
    profile = loaded.profile
    seconds = loaded.manifest.window_seconds
    if not seconds:
        start, end = profile.span()
        seconds = (end - start) or 1.0
    loaded.window_seconds = seconds
    loaded.proc_cpu_pct = {tid: 100 * used / seconds for tid, used in loaded.proc_cpu_seconds.items()}
    loaded.proc_cpu_total = round(sum(loaded.proc_cpu_pct.values()), 2) if loaded.proc_cpu_pct else None
    loaded.caller_tids = caller_tids(loaded)
    ort_profiles = loaded.ort_profiles
    loaded.pools = roles_mod.pool_threads(loaded.hook_sessions, node_threads(ort_profiles) if ort_profiles else None)
    if profile.has_samples:
        assign_roles(profile, loaded.caller_tids)
        loaded.pools.update(roles_mod.pools_by_runs_together(profile, loaded.hook_sessions, loaded.pools))
        roles_mod.apply_pool_roles(profile, loaded.pools)
    return loaded


def load_perf_script(path):
    """A LoadedRun straight from saved `perf script` text (e.g. captures from another machine)."""
    import lzma
    opener = lzma.open if str(path).endswith(".xz") else open
    notes: List[str] = []
    symbolizer = make_symbolizer(False, source_lines=False, notes=notes)
    try:
        with opener(path, "rt", errors="replace") as stream:
            profile = build_profile(parse_samples(stream), symbolizer)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise InputError(f"{path}: cannot read perf script text ({exc})")
    return LoadedRun(RunManifest(), profile, OrtContext(), symbolizer=symbolizer, perf_data="present",
                     notes=notes, run_path=str(path))
