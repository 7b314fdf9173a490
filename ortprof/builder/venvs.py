"""The build venv (cmake, ninja, wheel, setuptools, numpy) and the venv the wheel goes into."""
import json
import subprocess
from pathlib import Path

from ..errors import EnvironmentProblem, WorkloadError
from .checkout import needs_numpy_below_2, version_tuple
from .shell import run_logged

BUILD_VENV_STAMP = ".ortprof-build-venv"
PIP = ["-m", "pip", "install", "--disable-pip-version-check", "--no-input"]

# Asked of an interpreter after the install; -I keeps the cwd (maybe an ORT
# source tree with its own onnxruntime/ directory) and PYTHONPATH out of sys.path.
_INSPECT = r"""
import importlib.metadata, importlib.util, json, sys, sysconfig
spec = importlib.util.find_spec("onnxruntime")
try:
    version = importlib.metadata.version("onnxruntime")
except importlib.metadata.PackageNotFoundError:
    version = None
print(json.dumps({
    "python": "%d.%d" % sys.version_info[:2],
    "purelib": sysconfig.get_paths()["purelib"],
    "package_dir": list(spec.submodule_search_locations)[0] if spec else None,
    "version": version,
}))
"""


def venv_python(venv):
    return Path(venv) / "bin" / "python"


def cmake_requirement(cmake_minimum):
    """The PyPI cmake for an ORT needing `cmake_minimum`.

    CMake 4 dropped compatibility with projects declaring a minimum below 3.5,
    which several pinned ORT dependencies do, so stay on 3.x when ORT allows it.
    """
    requirement = f"cmake>={cmake_minimum}"
    if (version_tuple(cmake_minimum) or (0,))[0] < 4:
        requirement += ",<4"
    return requirement


def build_requirements(ort_version, cmake_minimum):
    """What the build venv needs for this ORT version."""
    numpy = "numpy<2" if needs_numpy_below_2(ort_version) else "numpy"
    return [cmake_requirement(cmake_minimum), "ninja", "wheel", "setuptools", "packaging", numpy]


def runtime_constraints(ort_version):
    """Pins applied when installing the wheel (constraints: only bite if the wheel needs numpy)."""
    return ["numpy<2"] if needs_numpy_below_2(ort_version) else []


def create_command(python, venv):
    return [str(python), "-m", "venv", str(venv)]


def pip_install_command(python, requirements):
    return [str(python), *PIP, *requirements]


def wheel_install_commands(python, wheel, constraints_file):
    """Install the wheel's dependencies, then force this very build in (a rebuild keeps its version)."""
    first = pip_install_command(python, [str(wheel)])
    if constraints_file is not None:
        first += ["--constraint", str(constraints_file)]
    return [first, pip_install_command(python, ["--force-reinstall", "--no-deps", str(wheel)])]


def build_venv_ready(venv, requirements):
    stamp = Path(venv) / BUILD_VENV_STAMP
    return venv_python(venv).exists() and stamp.is_file() and stamp.read_text() == "\n".join(requirements)


def mark_build_venv(venv, requirements):
    (Path(venv) / BUILD_VENV_STAMP).write_text("\n".join(requirements))


def run_or_raise(command, log, log_path, what, error=EnvironmentProblem, env=None):
    result = run_logged(command, log, env=env)
    if not result.ok:
        raise error(f"{what} failed: {result.last_line()}; full log: {log_path}")
    return result


def inspect_install(python):
    """Where `python` finds onnxruntime, and which version it is (no import of ORT)."""
    try:
        result = subprocess.run([str(python), "-I", "-c", _INSPECT], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"could not run {python}: {exc}")
    if result.returncode != 0:
        last = (result.stderr.strip() or "no output").splitlines()[-1]
        raise WorkloadError(f"{python} could not inspect the installed onnxruntime: {last}")
    return json.loads(result.stdout)


def python_facts(python):
    """Version, header directory and venv support of an interpreter (for preflight)."""
    code = ("import json, os, sys, sysconfig, importlib.util; inc = sysconfig.get_paths()['include']; "
            "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], 'include': inc, "
            "'has_headers': os.path.exists(os.path.join(inc, 'Python.h')), "
            "'has_ensurepip': importlib.util.find_spec('ensurepip') is not None, "
            "'executable': sys.executable, 'base_prefix': sys.base_prefix, "
            "'platform': sysconfig.get_platform().replace('-', '_').replace('.', '_')}))")
    try:
        result = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)


def module_versions(python, modules):
    """{module: version or None} as seen by `python` (for a build venv given with --build-venv)."""
    code = ("import importlib.metadata as m, json, sys\nout = {}\nfor name in sys.argv[1:]:\n"
            "    try:\n        out[name] = m.version(name)\n    except m.PackageNotFoundError:\n"
            "        out[name] = None\nprint(json.dumps(out))")
    try:
        result = subprocess.run([str(python), "-I", "-c", code, *modules], capture_output=True, text=True,
                                timeout=60)
        return json.loads(result.stdout) if result.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}
