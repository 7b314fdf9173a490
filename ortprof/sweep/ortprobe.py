"""Which ORT a workload will load, and which session config keys it knows.

ORT accepts any string as a session config key and silently ignores the ones
it does not know, so asking the Python API proves nothing. Every key ORT reads
is a string constant in its native module, though: a key that is not in the
binary is not known to that build.
"""
import json
import mmap
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# Finds ORT without importing it (no side effects, well under a second).
_LOCATE = ("import importlib.util, json; spec = importlib.util.find_spec('onnxruntime'); "
           "print(json.dumps(list(spec.submodule_search_locations or []) if spec else []))")
_PYTHON_NAME = re.compile(r"^python[0-9.]*$")
_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)


@dataclass
class OrtInstall:
    package_dir: Path
    version: str = None
    native_modules: list = field(default_factory=list)

    def knows(self, key):
        """True/False when the native module was read, None when it could not be."""
        if not self.native_modules:
            return None
        needle = key.encode() + b"\0"
        for path in self.native_modules:
            if _file_contains(path, needle):
                return True
        return False

    def describe(self):
        return {"version": self.version, "package_dir": str(self.package_dir),
                "native_modules": [str(p) for p in self.native_modules]}


def _file_contains(path, needle):
    try:
        with open(path, "rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(needle) >= 0
    except (OSError, ValueError):
        return False


def inspect_package(package_dir):
    """OrtInstall for an `onnxruntime` package directory."""
    package_dir = Path(package_dir)
    version = None
    try:
        match = _VERSION.search((package_dir / "__init__.py").read_text(errors="replace"))
        version = match.group(1) if match else None
    except OSError:
        pass
    capi = package_dir / "capi"
    natives = sorted(capi.glob("onnxruntime_pybind11_state*.so")) + sorted(capi.glob("libonnxruntime.so*"))
    return OrtInstall(package_dir, version, [p for p in natives if p.is_file()])


def locate_for_python(python, env=None):
    """OrtInstall that `python` would import, or None (no ORT, or not runnable)."""
    try:
        result = subprocess.run([python, "-c", _LOCATE], env=env, capture_output=True, text=True, timeout=30)
        locations = json.loads(result.stdout or "[]") if result.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return None
    return inspect_package(locations[0]) if locations else None


def python_of_command(executable):
    """The Python interpreter a command runs under: itself, or its script's #! line; else None."""
    if _PYTHON_NAME.match(os.path.basename(executable)):
        return executable
    try:
        with open(executable, "rb") as stream:
            first = stream.readline(512).decode(errors="replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env":
        words = [w for w in words[1:] if not w.startswith("-")]
        if not words:
            return None
        return words[0] if _PYTHON_NAME.match(words[0]) else None
    return words[0] if _PYTHON_NAME.match(os.path.basename(words[0])) else None
