"""perf's cpu-clock samples with DWARF call stacks: the Profile, and from it the thread table,
CPU categories, totals, hot paths and hot spots."""
from .base import Capture, Signal

PERF_DATA = "perf.data"
PERF_LOG = "perf.log"
MAPS = "maps.txt"            # the process's mappings when profiling began
SECTIONS = ("threads.categories", "totals", "hot_paths", "top_functions", "hot_spots")


def _perf_complaint(warnings):
    """perf's own words on a broken file, e.g. a perf record that was killed."""
    for warning in warnings:
        lowered = warning.lower()
        if "data size" in lowered or "properly terminated" in lowered:
            return "perf record did not finish writing it (killed?)"
        if "incompatible" in lowered or "truncated" in lowered or "corrupt" in lowered or "invalid" in lowered:
            return f"truncated or corrupt ({warning})"
    return warnings[-1] if warnings else "perf script produced no samples"


def copy_maps(pid, path):
    """The process's mappings as profiling begins (which file each address range was)."""
    try:
        with open(f"/proc/{pid}/maps") as source, open(path, "w") as target:
            target.write(source.read())
    except OSError:
        pass


class PerfCapture(Capture):
    """`perf record` of the profiled process: cpu-clock samples with DWARF stacks, plus the
    events other signals record through it (perf_options)."""

    def __init__(self, recorder, perf_path):
        super().__init__(recorder)
        self.perf_path = perf_path
        self.process = None

    def start(self, pid):
        from ..recording import profilers
        recorder, options = self.recorder, self.recorder.options
        copy_maps(pid, recorder.run.file(MAPS))
        extra = {"futex": False}   # unless the futex signal asks perf for its tracepoints
        for other in recorder.captures:
            extra.update(other.perf_options())
        argv = profilers.perf_command(self.perf_path, pid, str(recorder.run.file(PERF_DATA)), options.frequency,
                                      options.call_graph, options.stack_size, **extra)
        self.process = profilers.ProfilerProcess("perf", argv, str(recorder.run.file(PERF_LOG)),
                                                 str(recorder.run.file(PERF_DATA))).start()
        # the window opens when perf has its events open, not when it was launched: perf's
        # start-up (~0.1-0.2 s) would otherwise count as unsampled time in the window
        self.process.wait_until_recording()
        recorder.check_started(self.process)

    def processes(self):
        return {"perf": self.process} if self.process is not None else {}


def capture(recorder):
    perf = recorder.chosen.get("perf")
    return PerfCapture(recorder, perf) if perf else None


def load(run, loaded):
    """perf.data decoded by `perf script` into the profile (or the decoded samples the caller gave)."""
    from ..analysis.perfscript import PerfScriptStream
    from ..analysis.sampling import build_profile
    from ..errors import InputError
    from ..model.profile import Profile
    span = loaded.manifest.window_span
    if loaded.given_samples is not None:
        loaded.profile = build_profile(loaded.given_samples, loaded.symbolizer, span)
        loaded.perf_data = "present"
        return
    perf_data = run.file(PERF_DATA)
    if not perf_data.exists():
        loaded.perf_data = "missing"
        return
    loaded.perf_data = "present"
    try:
        stream = PerfScriptStream(perf_data)
        with stream as decoded:
            loaded.profile = build_profile(decoded, loaded.symbolizer, span)
        loaded.perf_warnings = stream.warnings()
        if not loaded.profile.has_samples and (stream.returncode or loaded.perf_warnings):
            loaded.unreadable = f"{perf_data} could not be decoded: {_perf_complaint(loaded.perf_warnings)}"
    except InputError as error:   # empty file
        loaded.unreadable = str(error)
    if loaded.unreadable:
        loaded.perf_data = "unreadable"
        loaded.profile = Profile(window=span)
        loaded.notes.append(loaded.unreadable + "; showing what the run has without it (latency, /proc CPU)")


def report(loaded, report, top):
    """threads[], totals, hot paths, top functions and hot spots; /proc CPU only without samples."""
    from ..analysis.pipeline import hot_paths, hot_spots, proc_only_threads, thread_table, totals
    from ..model.report import Totals
    profile, seconds = loaded.profile, loaded.window_seconds
    if profile.has_samples:
        report.threads = thread_table(profile, seconds, loaded.proc_cpu_pct, loaded.caller_tids)
        report.totals = totals(report.threads, loaded.proc_cpu_total)
        report.hot_paths, report.top_functions = hot_paths(profile, seconds, top)
        if loaded.symbolizer is not None:
            report.hot_spots = hot_spots(profile, seconds, loaded.symbolizer)
        report.samples = profile.cpu_samples
    else:
        report.threads = proc_only_threads(loaded.proc_cpu_pct, loaded.caller_tids)
        report.totals = Totals(proc_cpu_pct=loaded.proc_cpu_total)


def missing_reason(loaded, report):
    if loaded.profile.has_samples:
        return None
    if loaded.perf_data == "unreadable":
        return loaded.unreadable
    if loaded.perf_data == "missing":
        return "no perf data in this run (py-spy only, --profiler none, or perf failed): CPU categories need perf"
    return "perf recorded no CPU samples in the window"


SIGNAL = Signal(name="samples", description="perf cpu-clock samples with DWARF call stacks of every thread",
                files=(PERF_DATA, PERF_LOG, MAPS), checks=("perf", "perf-permission", "perf-dwarf"), load=load, report=report,
                report_sections=SECTIONS, missing=missing_reason, capture=capture)
