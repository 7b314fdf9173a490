"""Run directories and their versioned manifest (run.json).

A run directory holds everything one recording produced: run.json, perf.data,
py-spy output, the hook's records, per-thread CPU samples and logs. The
manifest is written when the run starts and rewritten as it progresses, so an
interrupted or killed recording still leaves a readable directory.
"""
import json
import os
import re
import time
from pathlib import Path

from ..errors import EXIT_ENVIRONMENT, InputError, OrtprofError
from ..model.manifest import RunManifest
from ..signals.runs import HOOK_DIR

MANIFEST = "run.json"
DEFAULT_ROOT = Path(".ortprof") / "runs"

# File names inside a run directory.
WORKLOAD_LOG = "workload.log"


def runs_root():
    return Path(os.environ.get("ORTPROF_RUNS_DIR") or DEFAULT_ROOT)


def slug(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:40] or "run"


class RunDirectory:
    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def create(cls, name, output=None):
        """A new run directory: `output` as given, or <root>/<timestamp>-<name>."""
        if output is not None and (Path(output) / MANIFEST).exists():
            raise InputError(f"{output} already holds a recording; choose another --output")
        path = new_directory(runs_root(), name, output, "run")
        (path / HOOK_DIR).mkdir(exist_ok=True)
        return cls(path)

    def file(self, name):
        return self.path / name

    def manifest(self):
        path = self.path / MANIFEST
        if not self.path.is_dir():
            raise InputError(f"{self.path}: no such run directory")
        if not path.exists():
            raise InputError(f"{self.path}: not an ortprof run (no {MANIFEST})")
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: unreadable manifest ({exc})")
        schema = manifest.get("schema", "")
        if not schema.startswith("ortprof.run/"):
            raise InputError(f"{path}: not an ortprof run manifest (schema {schema!r})")
        return manifest

    def read_manifest(self) -> RunManifest:
        """run.json as a RunManifest, the signals' sections recognised."""
        from ..signals import manifest_section_types
        document = self.manifest()
        try:
            return RunManifest.from_json(document, manifest_section_types())
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{self.path / MANIFEST}: malformed manifest ({exc})")

    def write_manifest(self, manifest: RunManifest):
        """Atomic rewrite, so a reader never sees half a manifest."""
        manifest = manifest.to_json()
        tmp = self.path / (MANIFEST + ".tmp")
        try:
            tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
            os.replace(tmp, self.path / MANIFEST)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise OrtprofError(f"cannot write {self.path / MANIFEST}: {exc.strerror or exc} "
                               "(the last complete manifest and all recorded files are kept)", EXIT_ENVIRONMENT)

    def file_sizes(self):
        sizes = {}
        for item in sorted(self.path.rglob("*")):
            if item.is_file() and item.name != MANIFEST:
                sizes[str(item.relative_to(self.path))] = item.stat().st_size
        return sizes


def new_directory(root, name, output=None, kind="run"):
    """`output` as given, else a new <root>/<timestamp>-<name>[-N]; checked writable."""
    if output is not None:
        path = Path(output)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(root) / f"{stamp}-{slug(name)}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = Path(root) / f"{stamp}-{slug(name)}-{suffix}"
    try:
        path.mkdir(parents=True, exist_ok=output is not None)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write the {kind} directory {path}: {exc.strerror or exc}")
    return path


def list_runs(root=None):
    """Run directories under `root`, oldest first (by manifest start time, then name)."""
    root = Path(root) if root else runs_root()
    if not root.is_dir():
        return []
    runs = [RunDirectory(p) for p in root.iterdir() if (p / MANIFEST).is_file()]
    return sorted(runs, key=lambda run: (_started(run), run.path.name))


def _started(run):
    try:
        return run.read_manifest().started_unix or 0
    except InputError:
        return 0


def resolve_run(spec=None):
    """RUN argument -> RunDirectory: a path, a name under the runs root, or the latest."""
    if spec:
        for candidate in (Path(spec), runs_root() / spec):
            if (candidate / MANIFEST).exists() or candidate.is_dir():
                return RunDirectory(candidate)
        raise InputError(f"{spec}: no such run directory (see 'ortprof runs')")
    runs = list_runs()
    if not runs:
        raise InputError(f"no recordings under {runs_root()}; run 'ortprof record -- CMD' first")
    return runs[-1]
