"""What `ortprof build` produced (schema ortprof.build/1), and finding it again.

A build root (default ./build) holds one manifest per config,
`manifest-<config>.json`, and a state file `state-<config>.json` that tracks a
build while it runs (and tells an interrupted or failed one apart).
"""
import json
import os
import time
from pathlib import Path

from ..errors import InputError
from ..symbols.elfinfo import read_elf_info
from .checkout import CONFIGS, canonical_config
from .plan import manifest_path, state_path

SCHEMA = "ortprof.build/1"
STATE_SCHEMA = "ortprof.build-state/1"
LIST_SCHEMA = "ortprof.builds/1"
DEFAULT_BUILD_ROOT = Path("build")
NATIVE_MODULE_GLOB = "onnxruntime_pybind11_state*"


def find_native_module(package_dir):
    """ORT's Python extension module in an installed onnxruntime package, or None."""
    if not package_dir:
        return None
    candidates = sorted((Path(package_dir) / "capi").glob(NATIVE_MODULE_GLOB))
    return next((path for path in candidates if path.suffix == ".so"), None)


def native_module_facts(module):
    """(build_id, symbol_status) of the native module; (None, None) when it is no ELF file."""
    if module is None:
        return None, None
    with open(module, "rb") as stream:
        if stream.read(4) != b"\x7fELF":
            return None, None
    info = read_elf_info(module)
    return info.build_id, info.symbol_status


def write_json(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    temporary.replace(path)


def write_state(plan, status, **extra):
    """Record where a build stands (running, failed, oom, interrupted, done)."""
    data = {"schema": STATE_SCHEMA, "config": plan.config, "status": status, "pid": os.getpid(),
            "source": str(plan.source_dir), "ort_version": plan.ort_version, "log": str(plan.log_path),
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    data.update(extra)
    write_json(plan.state_path, data)


def load_manifest(path):
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such build manifest")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable build manifest ({exc})")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InputError(f"{path}: not an ortprof build manifest (schema {SCHEMA} expected)")
    data["manifest"] = str(path.resolve())
    return data


def resolve_build(spec, build_root=None):
    """The manifest of a build named by config (Debug, relwithdebinfo, ...) or by manifest path.

    Returns the manifest dict (site_packages, venv, config, native_module,
    ort_version, ...); raises InputError saying how to get the build when there
    is none, or when its install is gone.
    """
    build_root = Path(build_root) if build_root is not None else DEFAULT_BUILD_ROOT
    config = canonical_config(spec)
    if config is not None:
        path = manifest_path(build_root, config)
        if not path.exists():
            hint = _incomplete_hint(build_root, config)
            raise InputError(f"no {config} build in {build_root} (no {path.name}){hint}; build one with "
                             f"`ortprof build --config {config}` or pass a manifest path")
    else:
        path = Path(spec)
        if not path.exists():
            raise InputError(f"--ort-build {spec}: neither a config ({', '.join(CONFIGS)}) nor a manifest file")
    data = load_manifest(path)
    site = data.get("site_packages")
    if not site or not Path(site).is_dir():
        raise InputError(f"the {data.get('config')} build of {path} was installed into {site}, which is gone; "
                         f"re-run `ortprof build --config {data.get('config')}`")
    return data


STATUS_WORDS = {"failed": "failed", "oom": "had its compiler killed (out of memory)", "interrupted":
                "was interrupted", "running": "is still running", "stopped": "stopped"}


def _incomplete_hint(build_root, config):
    state = _read_state(state_path(build_root, config))
    if state is None:
        return ""
    status = state["status"]
    where = f" at step {state['step']}" if state.get("step") else ""
    return f" (the last build {STATUS_WORDS.get(status, status)}{where}; log {state.get('log')})"


def _read_state(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA:
        return None
    if data.get("status") == "running" and not _pid_alive(data.get("pid")):
        data["status"] = "stopped"      # the ortprof process died without saying why
    return data


def _pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def list_builds(build_root=None):
    """{'schema', 'build_root', 'builds': [manifest...], 'unfinished': [state...]}."""
    build_root = Path(build_root) if build_root is not None else DEFAULT_BUILD_ROOT
    builds, unfinished = [], []
    for config in CONFIGS:
        path = manifest_path(build_root, config)
        state = _read_state(state_path(build_root, config))
        if path.exists():
            try:
                builds.append(load_manifest(path))
            except InputError:
                pass
        if state is not None and state.get("status") != "done":
            unfinished.append(state)
    return {"schema": LIST_SCHEMA, "build_root": str(build_root.resolve()), "builds": builds,
            "unfinished": unfinished}
