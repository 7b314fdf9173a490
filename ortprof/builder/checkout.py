"""The ONNX Runtime source tree being built: version, commit, needs; `--ref` clones."""
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ..errors import EnvironmentProblem, InputError

CONFIGS = ("Debug", "RelWithDebInfo", "Release", "MinSizeRel")
ORT_REPO_URL = "https://github.com/microsoft/onnxruntime.git"
BUILD_SCRIPT = "build.sh"
BUILD_PY = Path("tools") / "ci_build" / "build.py"

# CMake minimum per ORT release line, used only before a checkout exists
# (--ref --dry-run); the checkout's cmake/CMakeLists.txt is authoritative.
CMAKE_MINIMUM_BY_VERSION = ((1, 21), "3.28"), ((1, 15), "3.26"), ((1, 13), "3.24"), ((0, 0), "3.18")
# ORT built against numpy 1.x ABI before 1.19; numpy 2 in the build or at run time breaks it.
FIRST_NUMPY2_VERSION = (1, 19)


def canonical_config(name):
    """'debug' -> 'Debug'; None when `name` is not a CMake build type ORT knows."""
    for config in CONFIGS:
        if config.lower() == str(name).lower():
            return config
    return None


def version_tuple(text):
    """'v1.15.1' / '1.16.0-dev' -> (1, 15, 1); None when no version is in `text`."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if match is None:
        return None
    return tuple(int(part) for part in match.groups(default="0"))


def tag_for_ref(ref):
    """ORT tags releases as v1.15.1; accept the bare version too."""
    return f"v{ref}" if re.fullmatch(r"\d+\.\d+\.\d+", ref) else ref


def version_of_ref(ref):
    """'v1.15.1' -> '1.15.1'; None for refs that are no release tag (a branch, a commit)."""
    parsed = re.fullmatch(r"v?(\d+\.\d+\.\d+)", ref or "")
    return parsed.group(1) if parsed else None


def needs_numpy_below_2(version):
    parsed = version_tuple(version)
    return parsed is not None and parsed[:2] < FIRST_NUMPY2_VERSION


def estimated_cmake_minimum(version):
    parsed = version_tuple(version) or (999, 0, 0)
    for first, minimum in CMAKE_MINIMUM_BY_VERSION:
        if parsed[:2] >= first:
            return minimum
    return CMAKE_MINIMUM_BY_VERSION[-1][1]


@dataclass
class Checkout:
    path: Path
    version: Optional[str]
    commit: Optional[str]
    cmake_minimum: str
    cmake_minimum_from: str             # where cmake_minimum came from
    is_git: bool
    missing_submodules: List[str] = field(default_factory=list)

    @property
    def build_py(self):
        return self.path / BUILD_PY

    @property
    def deps_file(self):
        return self.path / "cmake" / "deps.txt"

    def build_dir(self, config):
        """Where ORT's build.sh puts a config's build (it passes --build_dir <src>/build/Linux)."""
        return self.path / "build" / "Linux" / config


def looks_like_checkout(path):
    path = Path(path)
    return (path / BUILD_SCRIPT).is_file() and (path / BUILD_PY).is_file()


def inspect_checkout(path):
    """Read what a build needs to know from an ORT source tree (no side effects)."""
    path = Path(path).resolve()
    if not path.is_dir():
        raise InputError(f"{path}: no such directory (expected an ONNX Runtime checkout)")
    if not looks_like_checkout(path):
        raise InputError(f"{path} is not an ONNX Runtime checkout (no {BUILD_SCRIPT} and {BUILD_PY})")
    version_file = path / "VERSION_NUMBER"
    version = version_file.read_text().strip() if version_file.is_file() else None
    cmake_minimum, cmake_from = _cmake_minimum(path, version)
    is_git = (path / ".git").exists()
    return Checkout(path=path, version=version, commit=_git_commit(path) if is_git else None,
                    cmake_minimum=cmake_minimum, cmake_minimum_from=cmake_from, is_git=is_git,
                    missing_submodules=_missing_submodules(path) if is_git else [])


def _cmake_minimum(path, version):
    lists = path / "cmake" / "CMakeLists.txt"
    if lists.is_file():
        minimum = linux_cmake_minimum(lists.read_text(errors="replace"))
        if minimum:
            return minimum, "cmake/CMakeLists.txt"
    return estimated_cmake_minimum(version), f"estimated for ORT {version or '(unknown version)'}"


_CMAKE_COMMAND = re.compile(r"^\s*(if|elseif|else|endif|cmake_minimum_required)\s*\((.*?)\)?\s*(?:#.*)?$",
                            re.IGNORECASE)
# Platform variables as CMake sets them on Linux; other conditions count as "may be true".
_LINUX_FALSE = {"WIN32", "MSVC", "APPLE", "IOS", "ANDROID", "CMAKE_SYSTEM_NAME STREQUAL \"WINDOWS\"",
                "CMAKE_SYSTEM_NAME STREQUAL \"DARWIN\"", "CMAKE_SYSTEM_NAME STREQUAL \"EMSCRIPTEN\""}
_LINUX_TRUE = {"UNIX", "LINUX", "CMAKE_SYSTEM_NAME STREQUAL \"LINUX\""}


def _on_linux(condition):
    """True/False when `condition` is a plain platform test, None when it depends on anything else."""
    text = " ".join(condition.replace("${", "").replace("}", "").split()).upper()
    negated = text.startswith("NOT ")
    text = text[4:] if negated else text
    value = True if text in _LINUX_TRUE else False if text in _LINUX_FALSE else None
    return value if value is None or not negated else not value


def linux_cmake_minimum(text):
    """The cmake_minimum_required that applies on Linux, reading if(WIN32)/else() branches.

    ORT 1.15 asks 3.25 on Windows and 3.26 elsewhere; the first call in the
    file is the Windows one. Calls under conditions this cannot decide count
    (the highest such minimum wins).
    """
    branches = []          # per open if(): [this branch applies?, an earlier branch surely applied?]
    found = []
    for line in text.splitlines():
        match = _CMAKE_COMMAND.match(line)
        if match is None:
            continue
        command, argument = match.group(1).lower(), match.group(2) or ""
        if command == "if":
            value = _on_linux(argument)
            branches.append([value is not False, value is True])
        elif command in ("elseif", "else") and branches:
            value = True if command == "else" else _on_linux(argument)
            taken = branches[-1][1]
            branches[-1] = [not taken and value is not False, taken or value is True]
        elif command == "endif" and branches:
            branches.pop()
        elif command == "cmake_minimum_required" and all(applies for applies, _ in branches):
            version = re.search(r"VERSION\s+([\d.]+)", argument, re.IGNORECASE)
            if version:
                found.append(version.group(1))
    return max(found, key=lambda v: version_tuple(v) or (0,)) if found else None


def _git_commit(path):
    try:
        result = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def _missing_submodules(path):
    """Submodule paths listed in .gitmodules whose directory is absent or empty."""
    gitmodules = path / ".gitmodules"
    if not gitmodules.is_file():
        return []
    paths = re.findall(r"^\s*path\s*=\s*(.+?)\s*$", gitmodules.read_text(errors="replace"), re.MULTILINE)
    return [sub for sub in paths if not (path / sub).is_dir() or not any((path / sub).iterdir())]


def read_supported_flags(checkout, python):
    """The option strings the checkout's build.py accepts, read from its own --help."""
    try:
        result = subprocess.run([str(python), str(checkout.build_py), "--help"], cwd=checkout.path,
                                capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"could not run {checkout.build_py} --help: {exc}")
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise EnvironmentProblem(f"{checkout.build_py} --help failed: {last}")
    return frozenset(re.findall(r"(?<![\w-])(--[A-Za-z][\w-]*)", result.stdout))


def clone_command(ref, repo_url, dest):
    """The git clone of one ORT tag with the submodules that version declares."""
    return ["git", "clone", "--depth", "1", "--branch", tag_for_ref(ref), "--recurse-submodules",
            "--shallow-submodules", repo_url, str(dest)]


def existing_clone_matches(dest, ref):
    """True when `dest` is a clone whose HEAD is `ref`; InputError when it holds something else."""
    dest = Path(dest)
    if not dest.exists():
        return False
    tag = tag_for_ref(ref)
    head = _rev_parse(dest, "HEAD")
    wanted = _rev_parse(dest, f"refs/tags/{tag}^{{commit}}") or _rev_parse(dest, f"{tag}^{{commit}}")
    if head and head == wanted:
        return True
    raise InputError(f"{dest} already exists and is not a clone at {tag}; remove it, or build it with "
                     f"--source {dest}")


def _rev_parse(path, rev):
    result = subprocess.run(["git", "-C", str(path), "rev-parse", "-q", "--verify", rev], capture_output=True,
                            text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def clone(ref, repo_url, dest, log_stream):
    """Clone `ref` into `dest`, output to the log; a failure becomes one clear line."""
    command = clone_command(ref, repo_url, dest)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")  # fail, never ask for credentials
    log_stream.write(f"$ {' '.join(command)}\n")
    log_stream.flush()
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    except FileNotFoundError:
        raise EnvironmentProblem("git is not installed (apt-get install -y git); it is needed for --ref")
    log_stream.write(result.stdout)
    log_stream.flush()
    if result.returncode != 0:
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("fatal:")), lines[-1] if lines else "no output")
        message = f"git clone of {repo_url} at {tag_for_ref(ref)} failed: {reason}"
        if "not found in upstream" in reason:
            raise InputError(message)
        raise EnvironmentProblem(message)
