"""One lint run: facts, optimization levels, layout, placement, findings, and the optional fix."""
import os
import tempfile
from dataclasses import dataclass, field
from typing import Optional

from ..errors import InputError
from . import checks, initializers, optimization, placement, profile_time
from .model_facts import check_external_data, load_model, model_facts

SCHEMA = "ortprof.lint/1"


@dataclass
class LintReport:
    model: dict
    onnxruntime: str
    levels: dict
    initializer_inputs: dict
    placement: Optional[dict]
    fix: Optional[dict]
    findings: list = field(default_factory=list)

    def to_json(self):
        return {
            "schema": SCHEMA,
            "model": self.model,
            "onnxruntime": self.onnxruntime,
            "levels": self.levels,
            "initializer_inputs": self.initializer_inputs,
            "placement": self.placement,
            "fix": self.fix,
            "findings": [f.to_json() for f in self.findings],
        }


def _placement_report(model_path, resolved, missing, progress):
    import onnxruntime as ort

    skipped = {"requested": resolved, "unavailable": missing}
    if missing:
        return {**skipped, "skipped": f"{', '.join(missing)} not available in this onnxruntime {ort.__version__} "
                                      f"(available: {', '.join(ort.get_available_providers())})"}
    if progress:
        progress(f"loading with {', '.join(resolved)} (verbose log)")
    found, session_providers, _ = placement.probe_placement(model_path, resolved)
    if not found.found:
        return {**skipped, "skipped": "ORT logged no node placement (a minimal build logs none)"}
    return placement.placement_report(resolved, found, session_providers)


def _quiet_ort():
    # Load-time warnings (e.g. initializers in inputs) would repeat once per level on stderr;
    # lint reports them itself.
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    return ort.__version__


def lint_model(model_path, providers=None, fix_path=None, progress=None, ort_profile=None):
    """Lint `model_path`; raises InputError for files that are not usable models. With `ort_profile`
    (a file ORT's profiler wrote) findings are ranked by the time of the nodes they concern."""
    # A bad profile file fails before minutes of optimizer runs, not after.
    times = profile_time.ProfileTimes(ort_profile) if ort_profile else None
    model = load_model(model_path)
    model_dir = os.path.dirname(os.path.abspath(model_path))
    external_files = check_external_data(model, model_path)
    facts = model_facts(model, model_path, external_files)
    # Option problems surface before minutes of optimizer runs, not after.
    if fix_path:
        initializers.check_fix_destination(model_path, fix_path, external_files)
    resolved, missing = placement.resolve_providers(providers) if providers else (None, None)
    ort_version = _quiet_ort()
    init_names = initializers.initializer_inputs(model)

    with tempfile.TemporaryDirectory(prefix="ortprof-lint-") as workdir:
        levels, context = optimization.run_levels(optimization.ModelSource(model_path), workdir, progress)
        without, not_measured = None, None
        if init_names:
            if progress:
                progress("measuring the model without initializer inputs")
            variant = initializers.without_initializer_inputs(model)
            source = optimization.ModelSource(model_path, data=variant.SerializeToString(), external_dir=model_dir)
            try:
                without = optimization.all_level_stats(source, workdir, "without-initializer-inputs", context)
            except InputError as exc:
                # A bonus measurement (an old ORT cannot load external data from memory): say so, go on.
                not_measured = str(exc)
        placement_report = _placement_report(model_path, resolved, missing, progress) if resolved else None
        fix = None
        if fix_path:
            fix = _apply_fix(model_path, fix_path, init_names, external_files, levels, workdir, context, progress)

    findings = checks.lint_findings(model_path, facts, levels, init_names, without, placement_report)
    if times is not None:
        findings = profile_time.rank_by_profile(findings, times, levels,
                                                profile_time.initializer_consumers(model, init_names))
    return LintReport(
        model=facts,
        onnxruntime=ort_version,
        levels=levels,
        initializer_inputs={
            "names": init_names,
            "nodes_at_all_without_them": without["nodes"] if without else None,
            "not_measured": not_measured,
        },
        placement=placement_report,
        fix=fix,
        findings=findings,
    )


def _apply_fix(model_path, fix_path, init_names, external_files, levels, workdir, context, progress):
    if not init_names:
        return {"path": fix_path, "written": False, "reason": "no initializers in graph inputs: nothing to fix"}
    if progress:
        progress(f"writing {fix_path}")
    written = initializers.write_fixed_model(model_path, fix_path, external_files)
    if progress:
        progress(f"optimizing {fix_path} at level all")
    fixed = optimization.all_level_stats(optimization.ModelSource(fix_path), workdir, "fixed", context)
    return {
        **written,
        "written": True,
        "nodes_at_all_before": levels["all"]["nodes"],
        "nodes_at_all_after": fixed["nodes"],
        "ops_at_all_after": fixed["ops"],
    }
