"""Children run as `nobody`, for the tests of what an unprivileged user sees.

Such a child cannot read the clone when it lives in a private directory (a
`mktemp -d` clone, root's home: mode 0700), nor the .venv inside it. So the child
gets a copy of what it imports that the system Python lacks, in a fresh temporary
directory readable by everyone all the way up: ortprof itself, click, psutil and
rich (what `python -m ortprof doctor/record` and `from ortprof import cgroup`
import; rich's own dependencies too, which it imports lazily), and the venv's
py-spy, which doctor's py-spy check runs. Made once per session, removed at exit.
"""
import atexit
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
# top-level packages the children import from the venv (not ortprof's heavy dependencies:
# numpy, onnx, onnxruntime are not imported by the commands these tests run)
CHILD_PACKAGES = ("click", "psutil", "rich", "markdown_it", "mdurl", "pygments")
CHILD_TOOLS = ("py-spy",)

_copy = None


def _readable_by_all(path):
    """Every directory from / down to `path` can be entered by others."""
    path = Path(path).resolve()
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [path, *path.parents])


def _open_up(top):
    """Directories 0755, files 0644 (0755 when executable): whatever the umask of the clone."""
    for directory, dirs, files in os.walk(top):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            executable = os.stat(path).st_mode & 0o111
            os.chmod(path, 0o755 if executable else 0o644)


def readable_copy():
    """(PYTHONPATH, bin directory) of the copy the `nobody` children run from."""
    global _copy
    if _copy is None:
        parent = next((d for d in (tempfile.gettempdir(), "/tmp") if _readable_by_all(d)), None)
        if parent is None:
            pytest.fail("no temporary directory that `nobody` can enter (TMPDIR and /tmp)")
        top = Path(tempfile.mkdtemp(prefix="ortprof-nobody-", dir=parent))
        atexit.register(shutil.rmtree, top, ignore_errors=True)
        lib, bin_dir = top / "lib", top / "bin"
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / "ortprof", lib / "ortprof", ignore=ignore)
        for name in CHILD_PACKAGES:
            spec = importlib.util.find_spec(name)
            if spec is None:
                pytest.fail(f"{name} is not installed in {sys.prefix}: `make setup` installs it")
            source = Path(spec.origin).parent if spec.submodule_search_locations else Path(spec.origin)
            if source.is_dir():
                shutil.copytree(source, lib / source.name, ignore=ignore)
            else:
                shutil.copy2(source, lib / source.name)
        bin_dir.mkdir()
        for tool in CHILD_TOOLS:
            found = shutil.which(tool, path=os.path.dirname(sys.executable)) or shutil.which(tool)
            if found:
                shutil.copy2(found, bin_dir / tool)
        _open_up(top)
        _copy = (str(lib), str(bin_dir))
    return _copy


def readable_site(top, script):
    """This venv's numpy and onnxruntime where `nobody` can read them (a 0700 clone's venv is not:
    copied then; linked when already readable), and `script`, in the directory `top`: what a
    service run by the system Python as nobody imports (with its model saved, not built)."""
    import numpy
    site = Path(numpy.__file__).parent.parent
    top = Path(top)
    for name in ("numpy", "numpy.libs", "onnxruntime"):
        source = site / name
        if not source.exists():
            continue
        if _readable_by_all(source):
            os.symlink(source, top / name)
        else:
            shutil.copytree(source, top / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(script, top / Path(script).name)
    _open_up(top)
    return top


def require_system_python():
    """Skip unless root, setpriv and a system Python of this venv's minor version are here."""
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"needs root, setpriv and {SYSTEM_PYTHON}")
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    if version != str(tuple(sys.version_info[:2])):
        pytest.skip("the system Python's version differs from the venv's")


def unprivileged_prefix():
    """argv prefix that runs a command as `nobody` with ortprof importable by the system
    Python (SYSTEM_PYTHON), or skip."""
    require_system_python()
    lib, bin_dir = readable_copy()
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "env", f"PYTHONPATH={lib}", f"PATH={bin_dir}:/usr/bin:/bin", "HOME=/tmp"]
