"""The two sides of a diff: a run directory (report + profile + manifest) or a report JSON file."""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..model.manifest import RunManifest
from ..model.profile import Profile
from ..model.report import Report

INCOMPLETE = ("starting", "warming-up", "recording")


@dataclass
class Side:
    label: str                          # BEFORE | AFTER
    source: str                         # the path given
    kind: str                           # "run" | "report-json"
    report: Report                      # built from the run directory, or rebuilt from the JSON file
    profile: Optional[Profile] = None   # run directories only
    manifest: Optional[RunManifest] = None

    @property
    def inferences(self):
        return sum(session.runs or 0 for session in self.report.sessions)

    @property
    def window_seconds(self):
        return self.report.window_seconds or 0.0

    def ms_per_inference(self, pct):
        """% of a core over the window -> CPU-ms per inference (None without run() records)."""
        if pct is None or not self.inferences:
            return None
        return pct / 100 * self.window_seconds * 1000 / self.inferences


def load_side(spec, label, with_ort_symbols=True):
    """The Side of a BEFORE/AFTER argument: a report JSON file, or a run directory (path or name)."""
    path = Path(spec)
    if path.is_file():
        return _report_file(path, label)
    from ..analysis.report import build_report
    from ..recording.rundir import resolve_run
    run = resolve_run(spec)
    manifest = run.read_manifest()
    status = manifest.status
    if status in INCOMPLETE or manifest.window_span is None:
        raise InputError(f"{label} {spec}: incomplete recording (status {status!r}, no profiling window): "
                         "it is still running or was killed; record it again")
    profile, report = build_report(run, with_ort_symbols=with_ort_symbols)
    if report.unreadable_perf_data:
        report.notes.append(f"{label}: {report.unreadable_perf_data}")
    return Side(label, str(spec), "run", report, profile, manifest)


def _report_file(path, label):
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{label} {path}: neither a run directory nor a report JSON file ({exc})")
    try:
        report = Report.from_json(document)
    except InputError as exc:
        raise InputError(f"{label} {path}: {exc}")
    return Side(label, str(path), "report-json", report)


def side_of(label, source, profile, report, manifest=None):
    """A Side from an analysis already in memory (fixtures, tests)."""
    return Side(label, str(source), "run" if profile is not None else "report-json", report, profile, manifest)
