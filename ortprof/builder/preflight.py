"""What a build needs, checked before anything starts; each gap named with its fix."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import psutil

from ..checks import FAIL, OK, WARNING, Check, failures
from ..errors import EnvironmentProblem
from . import checkout as checkouts
from . import venvs
from .plan import GIB, JOB_MEMORY_GIB, use_ccache

# Free disk a build needs (GiB), the one threshold for `build` and `doctor`. Measured
# for ORT 1.15.1 without unit tests: Debug 6.1 GB, RelWithDebInfo 7.1 GB build dirs,
# plus venvs and headroom.
DISK_GIB = {"Debug": 10, "RelWithDebInfo": 12, "Release": 6, "MinSizeRel": 6}
UNIT_TESTS_DISK_FACTOR = 3      # googletest and the test binaries (Debug: tens of GB)
LINK_MEMORY_GIB = 4             # linking the Debug native module (~500 MB) needs more than a compile


def disk_needed_gib(config, with_tests=False):
    """Free GiB a build of `config` needs (about; unit tests triple it)."""
    return DISK_GIB[config] * (UNIT_TESTS_DISK_FACTOR if with_tests else 1)


def apt_install(packages):
    prefix = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
    return f"{prefix}apt-get install -y {' '.join(packages)}"


def _tool_version(executable):
    try:
        output = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", output)
    return match.group(1) if match else None


class Tools:
    """Looks tools up the way the build will: the build venv's bin first, then PATH."""

    def __init__(self, plan, search_path=None):
        path = search_path if search_path is not None else os.environ.get("PATH", "")
        self.venv_bin = plan.build_venv / "bin"
        self.path = f"{self.venv_bin}{os.pathsep}{path}"
        self.system_path = path

    def which(self, *names, system_only=False):
        for name in names:
            found = shutil.which(name, path=self.system_path if system_only else self.path)
            if found:
                return found
        return None


def run_preflight(plan, search_path=None):
    """All checks for `plan`; nothing is installed or changed."""
    tools = Tools(plan, search_path)
    checks = [_git(plan, tools), _cmake(plan, tools), _ninja(plan, tools)]
    checks += _compilers(tools)
    checks += _python(plan)
    checks += [_disk(plan), _memory(plan)]
    ccache = _ccache(plan, tools)
    if ccache is not None:
        checks.append(ccache)
    return checks


def _git(plan, tools):
    git = tools.which("git")
    needs_clone = any(step.kind == "clone" and not step.done for step in plan.steps)
    if git:
        detail = f"git {_tool_version(git) or '?'}"
        checkout = plan.checkout
        if checkout is not None and checkout.missing_submodules:
            return Check("build-git", WARNING, f"{detail}; submodules not checked out: "
                         f"{', '.join(checkout.missing_submodules)} (build.py syncs them, which needs network)",
                         "git submodule update --init --recursive")
        return Check("build-git", OK, detail)
    if needs_clone:
        return Check("build-git", FAIL, "not found; needed to clone --ref", apt_install(["git"]), ("git",))
    return Check("build-git", WARNING, "not found; the checkout's commit is not recorded", apt_install(["git"]), ("git",))


def _cmake_minimum(plan):
    if plan.checkout is not None:
        return plan.checkout.cmake_minimum, f"ORT {plan.ort_version} needs >= {plan.checkout.cmake_minimum}"
    minimum = checkouts.estimated_cmake_minimum(plan.ort_version)
    return minimum, f"ORT {plan.ort_version or '?'} needs >= {minimum} (estimated before the clone)"


def _older(version, minimum):
    return (checkouts.version_tuple(version) or (0,)) < (checkouts.version_tuple(minimum) or (0,))


def _cmake(plan, tools):
    minimum, need = _cmake_minimum(plan)
    pip_fix = f"{plan.build_python} -m pip install '{venvs.cmake_requirement(minimum)}'"
    if plan.build_venv_is_ours:
        requirement = next(req for req in plan.build_requirements if req.startswith("cmake"))
        venv_cmake = plan.build_venv / "bin" / "cmake"
        if venv_cmake.exists() and not _older(_tool_version(str(venv_cmake)) or "0", minimum):
            return Check("build-cmake", OK, f"cmake {_tool_version(str(venv_cmake))} in the build venv ({need})")
        system = tools.which("cmake", system_only=True)
        version = _tool_version(system) if system else None
        if version is None or _older(version, minimum):
            found = f"system cmake {version} is too old" if version else "no system cmake"
            return Check("build-cmake", WARNING, f"{found} ({need}); the build venv gets {requirement} from PyPI")
        return Check("build-cmake", OK, f"system cmake {version}; the build venv gets {requirement} from PyPI")
    cmake = tools.which("cmake")
    version = _tool_version(cmake) if cmake else None
    if version is None:
        return Check("build-cmake", FAIL, f"not found in {plan.build_venv} or on PATH ({need})", pip_fix)
    if _older(version, minimum):
        return Check("build-cmake", FAIL, f"cmake {version} at {cmake} is too old ({need}; Debian 12 ships 3.25)",
                     pip_fix)
    return Check("build-cmake", OK, f"cmake {version} at {cmake} ({need})")


def _ninja(plan, tools):
    ninja = tools.which("ninja", "ninja-build")
    if ninja:
        return Check("build-ninja", OK, f"ninja {_tool_version(ninja) or '?'} at {ninja}")
    if plan.build_venv_is_ours:
        return Check("build-ninja", OK, "not on PATH; the build venv gets ninja from PyPI")
    return Check("build-ninja", FAIL, "not found (the build uses the Ninja generator)", apt_install(["ninja-build"]),
                 ("ninja-build",))


def _compilers(tools):
    checks = []
    for check_id, env_var, candidates, package in (
            ("build-c-compiler", "CC", ("cc", "gcc", "clang"), "build-essential"),
            ("build-cxx-compiler", "CXX", ("c++", "g++", "clang++"), "g++")):
        wanted = os.environ.get(env_var)
        found = tools.which(wanted) if wanted else tools.which(*candidates)
        if found:
            checks.append(Check(check_id, OK, f"{found} ({_compiler_version(found)})"))
        else:
            what = f"${env_var}={wanted} not found" if wanted else f"none of {', '.join(candidates)} found"
            checks.append(Check(check_id, FAIL, what, apt_install([package]), (package,)))
    patch = tools.which("patch")
    if patch is None:
        checks.append(Check("build-patch", WARNING, "not found; ORT patches some dependencies (protobuf, onnx) with it",
                            apt_install(["patch"]), ("patch",)))
    return checks


def _compiler_version(executable):
    try:
        output = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "version unknown"
    return output.splitlines()[0].strip() if output else "version unknown"


def _python_packages(facts, suffix):
    """Debian package names for an interpreter's headers/venv support (python3.11-dev, ...)."""
    if str(facts.get("base_prefix", "")).startswith("/usr") and not str(facts["base_prefix"]).startswith(
            "/usr/local"):
        return (f"python{facts['version']}-{suffix}",)
    return ()


def _python(plan):
    python = plan.build_python if not plan.build_venv_is_ours else Path(plan.options.python)
    facts = venvs.python_facts(python)
    if facts is None:
        return [Check("build-python", FAIL, f"{python} does not run", "give --python with a working interpreter")]
    checks = []
    label = f"Python {facts['version']} ({facts['executable']})"
    if facts["has_headers"]:
        checks.append(Check("build-python-headers", OK, f"{label}: {facts['include']}/Python.h"))
    else:
        packages = _python_packages(facts, "dev")
        fix = apt_install(packages) if packages else f"install the development headers of {facts['executable']}"
        checks.append(Check("build-python-headers", FAIL, f"{label}: no Python.h in {facts['include']}", fix, packages))
    creates_venvs = any(step.kind in ("build-venv", "venv") and not step.done for step in plan.steps)
    if creates_venvs and not facts["has_ensurepip"]:
        packages = _python_packages(facts, "venv")
        fix = apt_install(packages) if packages else "use an interpreter with ensurepip (--python)"
        checks.append(Check("build-python-venv", FAIL, f"{label} cannot create venvs (no ensurepip)", fix, packages))
    if checkouts.needs_numpy_below_2(plan.ort_version) and checkouts.version_tuple(facts["version"]) >= (3, 13, 0):
        checks.append(Check("build-numpy", FAIL, f"ORT {plan.ort_version} needs numpy<2, which has no wheels for "
                            f"Python {facts['version']}", "give --python python3.12 (or older)"))
    if not plan.build_venv_is_ours:
        checks += _custom_venv_modules(plan)
    return checks


def _custom_venv_modules(plan):
    found = venvs.module_versions(plan.build_python, ["numpy", "wheel", "setuptools"])
    problems = [name for name in ("wheel", "setuptools", "numpy") if not found.get(name)]
    numpy = found.get("numpy")
    if numpy and checkouts.needs_numpy_below_2(plan.ort_version) and numpy.split(".")[0] != "1":
        problems.append(f"numpy<2 (has {numpy})")
    if not problems:
        return [Check("build-venv", OK, f"{plan.build_venv}: " + ", ".join(f"{k} {v}" for k, v in found.items()))]
    wanted = ["numpy<2" if name.startswith("numpy") and checkouts.needs_numpy_below_2(plan.ort_version) else
              name.split("<")[0] for name in problems]
    return [Check("build-venv", WARNING, f"{plan.build_venv} lacks {', '.join(problems)} (ORT's wheel build "
                  f"needs them)", f"{plan.build_python} -m pip install " + " ".join(f"'{w}'" for w in wanted))]


def _existing_parent(path):
    path = Path(path)
    while not path.exists():
        path = path.parent
    return path


def _disk(plan):
    need = disk_needed_gib(plan.config, plan.options.with_tests)
    where = _existing_parent(plan.source_dir)
    free = shutil.disk_usage(where).free / GIB
    detail = f"{free:.0f} GiB free at {where}; a {plan.config} build needs about {need} GiB"
    if free >= need:
        return Check("build-disk", OK, detail)
    if plan.build_dir.exists():
        return Check("build-disk", WARNING, detail + " (less when resuming the existing build)")
    return Check("build-disk", FAIL, detail, f"free space on {where}, or build a checkout on a larger disk")


def _memory(plan):
    memory = psutil.virtual_memory()
    available = memory.available / GIB
    per_job = JOB_MEMORY_GIB[plan.config]
    detail = (f"{available:.1f} GiB available of {memory.total / GIB:.1f} GiB; {plan.jobs} jobs x {per_job} GiB "
              f"per {plan.config} job")
    if available < per_job:
        return Check("build-memory", WARNING, detail + ": even one job may be killed", "close programs or add swap")
    if plan.jobs * per_job > available:
        return Check("build-memory", WARNING, detail + ": the compiler may be killed (out of memory)",
                     f"--jobs {max(1, int(available / per_job))}")
    if available < LINK_MEMORY_GIB:
        return Check("build-memory", WARNING, detail + f": linking may need about {LINK_MEMORY_GIB} GiB")
    return Check("build-memory", OK, detail)


def _ccache(plan, tools):
    ccache = tools.which("ccache")
    if plan.options.ccache and ccache is None:
        return Check("build-ccache", FAIL, "requested with --ccache but not installed", apt_install(["ccache"]),
                     ("ccache",))
    if use_ccache(plan.options) and ccache:
        return Check("build-ccache", OK, f"{ccache} (rebuilds are faster; --no-ccache to turn off)")
    return None


def raise_if_missing(checks):
    """One line naming every missing piece and how to get it."""
    problems = failures(checks)
    if not problems:
        return
    packages = sorted({package for check in problems for package in check.apt})
    fixes = [check.fix for check in problems if check.fix and not check.apt]
    parts = [f"{check.id}: {check.detail}" for check in problems]
    remedy = ([apt_install(packages)] if packages else []) + fixes
    raise EnvironmentProblem("preflight failed: " + "; ".join(parts) + ". Fix: " + " && ".join(remedy))


def render(checks, console, problems_only=False):
    """The checks as a table; with `problems_only`, a one-line summary plus what is not ok."""
    from rich.table import Table

    shown = [check for check in checks if check.status != OK] if problems_only else checks
    passed = sum(check.status == OK for check in checks)
    if problems_only:
        console.print(f"preflight: {passed} of {len(checks)} checks ok", highlight=False)
    if not shown:
        return
    styles = {OK: "green", WARNING: "yellow", FAIL: "bold red"}
    table = Table(title=None if problems_only else "preflight", title_justify="left", show_edge=False,
                  pad_edge=False)
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for check in shown:
        table.add_row(check.id, f"[{styles[check.status]}]{check.status}[/]", check.detail, check.fix)
    console.print(table)
