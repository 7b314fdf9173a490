"""`ortprof build`, `ortprof build fetch-deps`, `ortprof builds` against a stand-in ORT source tree.

tests/fake_ort is a small ONNX Runtime look-alike: build.sh -> tools/ci_build/build.py
with ORT's option names, root check, submodule sync, a configure that checks cmake
and cmake/deps.txt, ninja-style [x/N] steps that resume, and a wheel of a tiny
`onnxruntime` package with a real native module. Everything else is real: venvs,
pip, git, the ELF reader, signals.
"""
import functools
import hashlib
import http.server
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from ortprof.builder import deps_mirror
from ortprof.builder.manifest import resolve_build
from ortprof.builder.plan import BuildOptions, default_jobs, make_plan
from ortprof.builder.preflight import DISK_GIB, run_preflight
from ortprof.checks import FAIL, OK, WARNING
from ortprof.builder.progress import OutputScanner
from ortprof.errors import InputError
from ortprof.symbols.elfinfo import read_elf_info

FAKE_ORT = Path(__file__).parent / "fake_ort"
TOTAL_STEPS = 41            # the stand-in's 40 compile steps + link, unit tests off
IS_ROOT = os.geteuid() == 0
HAS_CC = shutil.which("cc") is not None
GIB = 1024 ** 3


def ortprof(args, cwd, env=None, **kwargs):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "ortprof", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120, **kwargs)


def make_venv(path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def build_venv(tmp_path_factory):
    """What --build-venv takes, without downloads: a venv whose cmake reports a version the
    stand-in accepts, as the PyPI cmake of the default build venv would."""
    venv = make_venv(tmp_path_factory.mktemp("tools") / "venv-build")
    cmake = venv / "bin" / "cmake"
    cmake.write_text('#!/bin/sh\necho "cmake version 3.28.3"\n')
    cmake.chmod(0o755)
    return venv


@pytest.fixture(scope="session")
def install_venv(tmp_path_factory):
    """One install venv (with pip) shared by the tests that are not about venv creation."""
    venv = tmp_path_factory.mktemp("install") / "venv-debug"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return venv


@pytest.fixture
def ort_tree(tmp_path):
    tree = tmp_path / "onnxruntime"
    shutil.copytree(FAKE_ORT, tree, ignore=shutil.ignore_patterns("build", "__pycache__"))
    (tree / "build.sh").chmod(0o755)
    return tree


def build_args(tree, build_venv, *extra):
    return ["build", "--source", tree, "--build-venv", build_venv, *extra]


def latest_log(build_root):
    return max((build_root / "logs").glob("*.log"), key=lambda path: path.stat().st_mtime)


def build_sh_argv(script):
    line = next(line for line in script.splitlines() if "./build.sh" in line and not line.startswith("#"))
    argv = shlex.split(line.split("&&", 1)[1])
    return argv[argv.index("./build.sh") + 1:]


# --- dry run: the exact commands, flag by flag ---------------------------------------------

@pytest.mark.live
def test_help_explains_configs_and_job_memory(tmp_path):
    result = ortprof(["build", "--help"], tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "RelWithDebInfo (-O2 -g)" in text and "profiles like the release build" in text
    assert "1.5 GiB per Debug job" in text and "2 GiB per RelWithDebInfo" in text
    assert "fetch-deps" in text
    fetch_help = ortprof(["build", "fetch-deps", "--help"], tmp_path)
    assert fetch_help.returncode == 0 and "MIRROR" in fetch_help.stdout


@pytest.mark.live
def test_dry_run_prints_exact_commands_and_changes_nothing(ort_tree, tmp_path):
    result = ortprof(["build", "--source", ort_tree, "--jobs", "3", "--no-ccache", "--dry-run", "--",
                      "--use_dnnl"], tmp_path)
    assert result.returncode == 0, result.stderr
    build_root = tmp_path / "build"
    venv = build_root / "venv-build"
    expected = ["--config", "Debug", "--build_shared_lib", "--parallel", "3", "--enable_pybind", "--build_wheel",
                "--skip_tests", "--update", "--build", "--cmake_generator", "Ninja"]
    expected += ["--allow_running_as_root"] if IS_ROOT else []
    expected += ["--skip_submodule_sync",                 # not a git checkout
                 "--cmake_path", str(venv / "bin" / "cmake"),
                 "--cmake_extra_defines", "onnxruntime_BUILD_UNIT_TESTS=OFF",
                 "CMAKE_C_FLAGS=-fno-omit-frame-pointer", "CMAKE_CXX_FLAGS=-fno-omit-frame-pointer",
                 "--use_dnnl"]                            # pass-through after --
    assert build_sh_argv(result.stdout) == expected
    lines = result.stdout.splitlines()
    build_line = next(line for line in lines if "./build.sh" in line and not line.startswith("#"))
    assert build_line.startswith(f"cd {ort_tree} && PATH={venv / 'bin'}:\"$PATH\" NINJA_STATUS='[%f/%t] '")
    # ORT 1.15.1: cmake >= 3.26 from its CMakeLists.txt, numpy<2 for the build and the install
    pip_tools = next(line for line in lines if "pip install" in line and "cmake" in line)
    assert shlex.split(pip_tools)[-6:] == ["cmake>=3.26,<4", "ninja", "wheel", "setuptools", "packaging", "numpy<2"]
    assert f"printf '%s\\n' 'numpy<2' > {build_root / 'constraints-debug.txt'}" in lines
    wheel = ort_tree / "build/Linux/Debug/dist" / f"onnxruntime-1.15.1-cp{sys.version_info[0]}{sys.version_info[1]}"
    assert any(str(wheel) in line and "--force-reinstall" in line for line in lines)
    assert "preflight" in result.stderr
    assert not build_root.exists() and not (ort_tree / "build").exists()


@pytest.mark.live
def test_dry_run_follows_what_the_checkout_supports(ort_tree, tmp_path, build_venv):
    # a newer ORT (numpy 2 fine), a build.py without some flags, a git checkout missing a submodule
    (ort_tree / "VERSION_NUMBER").write_text("1.20.1\n")
    subprocess.run(["git", "init", "-q", str(ort_tree)], check=True)
    (ort_tree / ".gitmodules").write_text('[submodule "emsdk"]\n\tpath = cmake/external/emsdk\n'
                                          '\turl = https://github.com/emscripten-core/emsdk.git\n')
    env = {"FAKE_ORT_HIDE_FLAGS": "--cmake_generator --build_shared_lib"}
    result = ortprof(["build", "--source", ort_tree, "--config", "relwithdebinfo", "--jobs", "1", "--with-tests",
                      "--no-frame-pointers", "--no-ccache", "--dry-run", "--json"], tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["schema"] == "ortprof.build-plan/1" and plan["config"] == "RelWithDebInfo"
    flags = plan["build_flags"]
    assert "--cmake_generator" not in flags and "--build_shared_lib" not in flags
    assert plan["dropped_flags"] == ["--build_shared_lib", "--cmake_generator"]
    assert "--skip_submodule_sync" not in flags          # build.py must sync the missing submodule
    assert "--cmake_extra_defines" not in flags          # unit tests on, no frame-pointer flags
    tools = next(step for step in plan["steps"] if step["kind"] == "build-venv-tools")["command"]
    assert tools[-1] == "numpy" and not any(step["kind"] == "constraints" for step in plan["steps"])
    git_check = next(check for check in plan["preflight"] if check["id"] == "build-git")
    assert git_check["status"] == WARNING and "cmake/external/emsdk" in git_check["detail"]

    unknown = ortprof(build_args(ort_tree, build_venv, "--dry-run", "--", "--use_no_such_thing"), tmp_path)
    assert unknown.returncode == 3
    assert "does not support --use_no_such_thing" in unknown.stderr


# --- the whole orchestration against the stand-in -----------------------------------------

@pytest.mark.live
def test_build_installs_wheel_writes_manifest_and_lists_it(ort_tree, tmp_path, build_venv):
    result = ortprof(build_args(ort_tree, build_venv, "--jobs", "2", "--json"), tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    build_root = tmp_path / "build"
    assert manifest["schema"] == "ortprof.build/1"
    assert manifest["config"] == "Debug" and manifest["ort_version"] == "1.15.1"
    assert manifest["venv"] == str(build_root / "venv-debug") and manifest["installed_into"] == "venv"
    assert Path(manifest["wheel"]).parent == ort_tree / "build/Linux/Debug/dist"
    assert "--parallel" in manifest["flags"] and manifest["flags"][manifest["flags"].index("--parallel") + 1] == "2"
    assert "done in" in result.stderr and "ortprof record --ort-build Debug" in result.stderr

    # the wheel really is installed in the venv, and is this build
    check = subprocess.run([str(build_root / "venv-debug/bin/python"), "-c",
                            "import onnxruntime; print(onnxruntime.__version__, onnxruntime.build_config)"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert check.stdout.split() == ["1.15.1", "Debug"], check.stderr

    # build.py got the flags (the stand-in echoes them, rejects unknown ones, refuses root without the flag)
    log = Path(manifest["log"]).read_text()
    assert "build.py arguments: --build_dir" in log and "--config Debug" in log and "-j2" in log
    assert "-- Configuring done" in log and f"[{TOTAL_STEPS}/{TOTAL_STEPS}] Linking" in log

    if HAS_CC:
        module = Path(manifest["native_module"])
        assert module.is_file() and module.parent.parent == Path(manifest["site_packages"]) / "onnxruntime"
        elf = read_elf_info(module)
        assert manifest["build_id"] == elf.build_id and manifest["symbol_status"] == "dwarf"

    # found again by config name (any case) and by manifest path
    for spec in ("Debug", "debug", str(build_root / "manifest-debug.json")):
        found = resolve_build(spec, build_root)
        assert found["site_packages"] == manifest["site_packages"] and found["native_module"] == \
            manifest["native_module"]
    listing = json.loads(ortprof(["builds", "--json"], tmp_path).stdout)
    assert listing["schema"] == "ortprof.builds/1"
    assert [build["config"] for build in listing["builds"]] == ["Debug"] and listing["unfinished"] == []
    table = ortprof(["builds"], tmp_path).stdout
    assert "Debug" in table and "1.15.1" in table

    # hand-off: `ortprof record --ort-build Debug` runs the workload on this build
    recorded = ortprof(["record", "-q", "--ort-build", "Debug", "--profiler", "none", "--delay", "0.5",
                        "--duration", "1", "-o", str(tmp_path / "run"), "--", sys.executable, "-c",
                        "import onnxruntime, time; print('ort', onnxruntime.build_config); time.sleep(5)"],
                       tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    run_manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_manifest["ort_build"]["config"] == "Debug"
    assert "ort Debug" in (tmp_path / "run" / "workload.log").read_text()

    # the same command again: nothing left to compile, installed again
    again = ortprof(build_args(ort_tree, build_venv), tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resuming the build" in again.stderr
    assert "ninja: no work to do." in latest_log(build_root).read_text()


@pytest.mark.live
def test_compile_error_shows_first_error_and_log_then_resumes(ort_tree, tmp_path, build_venv, install_venv):
    args = build_args(ort_tree, build_venv, "--venv", install_venv)
    failed = ortprof(args, tmp_path, env={"FAKE_ORT_FAIL_AT": "7"})
    assert failed.returncode == 5
    log = latest_log(tmp_path / "build")
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("ortprof: error: ONNX Runtime build failed at step 7/41")
    assert "error: 'SpinPauseTypo' was not declared in this scope" in message
    assert f"full log: {log}" in message
    assert "FAILED: CMakeFiles/onnxruntime.dir/onnxruntime/core/optimizer/graph_transformer_utils.cc.o" in failed.stderr
    assert "ninja: build stopped: subcommand failed." in log.read_text()
    state = json.loads((tmp_path / "build/state-debug.json").read_text())
    assert state["status"] == "failed" and state["step"] == "7/41"

    # fixed, and this time installed with --install into "the current environment" of --python
    python = install_venv / "bin" / "python"
    fixed = ortprof(build_args(ort_tree, build_venv, "--install", "--python", python, "--json"), tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert "[1/35] " in latest_log(tmp_path / "build").read_text()     # only steps 7..41 are built
    manifest = json.loads(fixed.stdout)
    assert manifest["installed_into"] == "current-environment" and manifest["venv"] is None
    assert Path(manifest["site_packages"]).is_relative_to(install_venv)
    assert json.loads((tmp_path / "build/state-debug.json").read_text())["status"] == "done"


@pytest.mark.live
def test_oom_killed_compiler_says_lower_jobs(ort_tree, tmp_path, build_venv, install_venv):
    result = ortprof(build_args(ort_tree, build_venv, "--venv", install_venv, "--jobs", "4"), tmp_path,
                     env={"FAKE_ORT_OOM_AT": "12"})
    assert result.returncode == 5
    message = result.stderr.strip().splitlines()[-1]
    assert "killed at step 12/41, most likely out of memory with --jobs 4: re-run with --jobs 2" in message
    assert "full log:" in message
    listing = json.loads(ortprof(["builds", "--json"], tmp_path).stdout)
    assert listing["builds"] == [] and listing["unfinished"][0]["status"] == "oom"
    with pytest.raises(InputError, match=r"no Debug build .* \(the last build had its compiler killed "
                                         r"\(out of memory\) at step 12/41; log "):
        resolve_build("Debug", tmp_path / "build")


@pytest.mark.live
def test_interrupted_build_resumes_where_it_stopped(ort_tree, tmp_path, build_venv, install_venv):
    args = build_args(ort_tree, build_venv, "--venv", install_venv)
    # the stand-in sends SIGINT to its process group at step 10, as Ctrl-C in a terminal does
    interrupted = ortprof(args, tmp_path, env={"FAKE_ORT_INTERRUPT_AT": "10"}, start_new_session=True)
    assert interrupted.returncode == 130, interrupted.stderr
    assert "build interrupted at step 9/41; run the same command again to resume" in interrupted.stderr
    assert json.loads((tmp_path / "build/state-debug.json").read_text())["status"] == "interrupted"

    resumed = ortprof(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the build" in resumed.stderr
    assert "[1/32] " in latest_log(tmp_path / "build").read_text()
    done = (ort_tree / "build/Linux/Debug/.fake_ninja_done").read_text().splitlines()
    assert len(done) == len(set(done)) == TOTAL_STEPS            # no step compiled twice


# --- preflight -------------------------------------------------------------------------------

@pytest.fixture
def sparse_path(tmp_path):
    """A PATH with git and a shell but no compilers, no ninja and Debian 12's too-old cmake."""
    bin_dir = tmp_path / "sparse-bin"
    bin_dir.mkdir()
    for tool in ("sh", "bash", "git"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    cmake = bin_dir / "cmake"
    cmake.write_text('#!/bin/sh\necho "cmake version 3.25.1"\n')
    cmake.chmod(0o755)
    return bin_dir


@pytest.mark.live
def test_preflight_names_each_missing_tool_with_its_install_command(ort_tree, tmp_path, sparse_path):
    tools_venv = make_venv(tmp_path / "tools-venv")              # no cmake, no ninja in it
    result = ortprof(build_args(ort_tree, tools_venv), tmp_path, env={"PATH": str(sparse_path)})
    assert result.returncode == 4
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("ortprof: error: preflight failed:")
    assert "build-cmake: cmake 3.25.1 at" in message and "is too old (ORT 1.15.1 needs >= 3.26" in message
    assert "build-ninja: not found" in message and "build-c-compiler: none of cc, gcc, clang found" in message
    assert "build-cxx-compiler: none of c++, g++, clang++ found" in message
    apt = "apt-get install -y build-essential g++ ninja-build"
    assert f"Fix: {'' if IS_ROOT else 'sudo '}{apt}" in message
    assert f"{tools_venv}/bin/python -m pip install 'cmake>=3.26,<4'" in message
    assert not (tmp_path / "build" / "logs").exists()             # stopped before anything started

    # with ortprof's own build venv the old system cmake is only a warning: PyPI's cmake is used
    plan = make_plan(BuildOptions(source=ort_tree, build_root=tmp_path / "build", ccache=False))
    checks = {check.id: check for check in run_preflight(plan, search_path=str(sparse_path))}
    assert checks["build-cmake"].status == WARNING and "system cmake 3.25.1 is too old" in checks["build-cmake"].detail
    assert "cmake>=3.26,<4 from PyPI" in checks["build-cmake"].detail
    assert checks["build-ninja"].status == OK                     # PyPI ninja too
    assert checks["build-cxx-compiler"].status == FAIL and checks["build-cxx-compiler"].apt == ("g++",)
    assert checks["build-git"].status == OK
    assert f"a Debug build needs about {DISK_GIB['Debug']} GiB" in checks["build-disk"].detail


def test_default_jobs_fit_cores_and_memory():
    assert default_jobs("Debug", cores=8, available_bytes=6 * GIB)[0] == 4
    assert default_jobs("RelWithDebInfo", cores=8, available_bytes=6 * GIB)[0] == 3
    assert default_jobs("Debug", cores=2, available_bytes=64 * GIB)[0] == 2
    jobs, reason = default_jobs("Release", cores=16, available_bytes=1 * GIB)
    assert jobs == 1 and "2.0 GiB per Release job" in reason


# --- output scanning ---------------------------------------------------------------------------

def test_scanner_reads_progress_failures_and_oom():
    scanner = OutputScanner()
    for line in ["-- Configuring done", "-- Build files have been written to: /src/_deps/re2-subbuild",
                 "[3/9] No patch step for 're2-populate'", "-- Build files have been written to: /src/build/Debug",
                 "[1/998] Building CXX object a.o", "[412/998] Building CXX object b.o"]:
        scanner.feed(line)
    assert (scanner.phase, scanner.position(), round(scanner.fraction, 3)) == ("compile", "412/998", 0.413)
    scanner.feed("FAILED: CMakeFiles/x.dir/y.cc.o")
    scanner.feed("/usr/bin/c++ -c y.cc")
    scanner.feed("y.cc:3:1: error: expected ';' before '}' token")
    scanner.feed("build.py [ERROR] - Failed to build")
    assert scanner.error_summary() == "y.cc:3:1: error: expected ';' before '}' token" and not scanner.oom

    oom = OutputScanner()
    for line in ["-- Build files have been written to: /b", "[5/9] Building CXX object a.o", "FAILED: a.o", "c++: fatal error: Killed signal terminated "
                 "program cc1plus", "compilation terminated."]:
        oom.feed(line)
    assert oom.oom and "Killed signal" in oom.error_summary()

    make = OutputScanner()
    make.feed("-- Build files have been written to: /b")
    make.feed("[ 41%] Building CXX object a.o")
    assert make.position() == "41%"


def test_plain_progress_follows_the_compile_of_a_real_build_log():
    """The real 1.15.1 Debug log, fed line by line to the no-terminal printer: the 27 FetchContent
    sub-builds' [x/9] lines are configure; the positions shown are the 999-step compile's."""
    import lzma
    import re

    from rich.console import Console

    from ortprof.builder.progress import BuildProgress

    output = io.StringIO()
    console = Console(file=output, force_terminal=False, width=200)
    # no build directory at hand: no build.ninja to weigh the steps by (tests/test_build_eta.py has that)
    with BuildProgress(console, "ORT 1.15.1 Debug") as progress, \
            lzma.open(FIXTURES / "ort-1.15.1-debug-build.log.xz", "rt") as log:
        for line in log:
            progress.line(line.rstrip("\n"))
            if progress.scanner.phase == "configure":
                assert progress.scanner.position() is None
    lines = output.getvalue().splitlines()
    assert [line for line in lines if line.endswith("...")] == [
        "ORT 1.15.1 Debug: configure...", "ORT 1.15.1 Debug: compile...", "ORT 1.15.1 Debug: wheel..."]
    shown = [tuple(map(int, re.search(r"(\d+)/(\d+) steps", line).groups())) for line in lines if " steps (" in line]
    assert {total for _, total in shown} == {999}
    done = [step for step, _ in shown]
    assert done == sorted(set(done)) and done[-1] == 999                 # ninja logged 998; the wheel means done
    assert 18 <= len(shown) <= 25                                       # about every 5%
    assert all("100%" not in line for line in lines if " steps (" in line and "999/999" not in line)
    assert lines.index("ORT 1.15.1 Debug: wheel...") == len(lines) - 1
    assert "ORT 1.15.1 Debug: ETA unknown: no build.ninja to tell which steps are left" in lines
    assert all(line.endswith("ETA unknown") for line in lines if " steps (" in line and "999/999" not in line)


def test_cmake_minimum_is_the_linux_branch(tmp_path):
    from ortprof.builder.checkout import inspect_checkout, linux_cmake_minimum

    snippet = ("# Minimum CMake required\nif (WIN32)\n  cmake_minimum_required(VERSION 3.25)\nelse()\n"
               "  cmake_minimum_required(VERSION 3.26)\nendif()\nproject(onnxruntime C CXX ASM)\n")
    assert linux_cmake_minimum(snippet) == "3.26"
    assert linux_cmake_minimum(snippet.replace("WIN32", "NOT WIN32")) == "3.25"
    assert linux_cmake_minimum("cmake_minimum_required(VERSION 3.18)\n") == "3.18"
    assert linux_cmake_minimum("if(APPLE)\ncmake_minimum_required(VERSION 3.28)\nelseif(UNIX)\n"
                               "cmake_minimum_required(VERSION 3.24)\nendif()") == "3.24"
    tree = tmp_path / "onnxruntime"
    shutil.copytree(FAKE_ORT, tree)
    assert "if (WIN32)" in (tree / "cmake/CMakeLists.txt").read_text()
    assert inspect_checkout(tree).cmake_minimum == "3.26"


# --- offline: the deps mirror ----------------------------------------------------------------

def archive_bytes(name):
    """A small, deterministic zip standing in for a dependency's source archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(f"{name}-src/CMakeLists.txt", date_time=(2023, 1, 1, 0, 0, 0))
        archive.writestr(info, f"project({name})\n")
    return buffer.getvalue()


NEEDED = deps_mirror.needed_names()          # a CPU build with Python bindings, no unit tests
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def hosted(ort_tree, tmp_path):
    """Archives for every download of the tree (deps.txt and eigen.cmake's URL), laid out by URL
    path as the hosts serve them; the files get their SHA1s (the 'upstream' ones)."""
    host = tmp_path / "host"
    for dep in deps_mirror.checkout_downloads(ort_tree):
        data = archive_bytes(dep.name)
        target = host / dep.url.split("://", 1)[1].split("/", 1)[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        declared = dep.declared_in or ort_tree / "cmake" / "deps.txt"
        declared.write_text(declared.read_text().replace(dep.digest, hashlib.sha1(data).hexdigest()))
    return host


def fill_mirror(mirror, deps, skip=(), only=None):
    mirror.mkdir(exist_ok=True)
    for index, dep in enumerate(deps):
        if dep.name not in skip and (only is None or dep.name in only):
            # both names the lookup accepts: <name>.zip and the URL's own file name
            name = dep.mirror_name if index % 2 else dep.url_basename
            (mirror / name).write_bytes(archive_bytes(dep.name))


def test_only_what_a_cpu_build_fetches_is_needed_on_the_real_deps_txt(ort_tree):
    shutil.copy(FIXTURES / "ort-1.15.1-deps.txt", ort_tree / "cmake" / "deps.txt")
    in_deps_txt = deps_mirror.parse_deps((ort_tree / "cmake" / "deps.txt").read_text())
    assert len(in_deps_txt) == 40
    needed = sorted(dep.name for dep in in_deps_txt if dep.name in NEEDED)
    assert needed == ["abseil_cpp", "date", "flatbuffers", "google_nsync", "json", "microsoft_gsl", "microsoft_wil",
                      "mp11", "onnx", "protobuf", "pybind11", "pytorch_cpuinfo", "re2", "safeint"]
    # eigen is no deps.txt entry in 1.15.1: found in cmake/external/eigen.cmake, declared twice, one download
    assert (ort_tree / "cmake/external/eigen.cmake").read_text().count("FetchContent_Declare(") == 2
    outside = deps_mirror.cmake_downloads(ort_tree)
    assert [(dep.name, dep.where(ort_tree), dep.algorithm) for dep in outside] == \
        [("eigen", "cmake/external/eigen.cmake", "sha1")]
    assert outside[0].url_basename == "eigen-d10b27fe37736d2944630ecd7557cefa95cf87c9.zip"
    assert "eigen" in NEEDED and "eigen" not in deps_mirror.needed_names(build_flags=["--use_preinstalled_eigen"])
    assert {"googletest"} <= deps_mirror.needed_names(with_tests=True) and "googletest" not in NEEDED
    assert "mimalloc" in deps_mirror.needed_names(build_flags=["--use_mimalloc"])


def test_partial_mirror_on_the_real_deps_txt(ort_tree, tmp_path):
    shutil.copy(FIXTURES / "ort-1.15.1-deps.txt", ort_tree / "cmake" / "deps.txt")
    downloads = deps_mirror.checkout_downloads(ort_tree)
    mirror = tmp_path / "mirror"
    fill_mirror(mirror, downloads, only=NEEDED - {"onnx", "eigen"})
    with pytest.raises(InputError) as missing:
        deps_mirror.plan_rewrite(ort_tree, mirror, trust_mirror=True, needed=NEEDED)
    message = str(missing.value)
    assert message.startswith(f"2 of the downloads this build needs are missing from {mirror}: onnx (onnx.zip or "
                              f"v1.14.0.zip, from deps.txt); eigen (eigen.zip or eigen-d10b27fe37736d2944630ecd7557"
                              f"cefa95cf87c9.zip, from cmake/external/eigen.cmake); fill it with `ortprof build "
                              f"fetch-deps --source {ort_tree} {mirror}`")
    assert "--eigen-path DIR" in message

    fill_mirror(mirror, downloads, only={"onnx", "eigen"})
    rewrite = deps_mirror.plan_rewrite(ort_tree, mirror, trust_mirror=True, needed=NEEDED)
    assert sorted(match.dep.name for match in rewrite.matches) == sorted(NEEDED)
    assert len(rewrite.unmirrored) == 26 and "protoc_win64" in {dep.name for dep in rewrite.unmirrored}
    deps_mirror.apply_rewrite(rewrite)
    lines = {dep.name: dep for dep in deps_mirror.parse_deps((ort_tree / "cmake/deps.txt").read_text())}
    assert all(Path(lines[name].url).parent == mirror for name in NEEDED - {"eigen"})
    assert lines["cutlass"].url.startswith("https://github.com/NVIDIA/cutlass/")      # left at its URL
    eigen_cmake = (ort_tree / "cmake/external/eigen.cmake").read_text()
    eigen_archive = deps_mirror.find_archive(downloads[-1], mirror)
    # both of eigen.cmake's declarations (with the ACL patch and without) point at the one archive
    assert eigen_cmake.count(f"URL {eigen_archive}\n") == 2 and "gitlab.com" not in eigen_cmake
    assert eigen_cmake.count(f"URL_HASH SHA1={deps_mirror.file_digest(eigen_archive)}") == 2   # --trust-mirror
    assert f"cmake/deps.txt, cmake/external/eigen.cmake: 15 downloads from {mirror}" in rewrite.summary()
    assert "26 this build does not fetch stay at their URLs" in rewrite.summary()

    restored = deps_mirror.restore(ort_tree)
    assert sorted(path.name for path in restored) == ["deps.txt", "eigen.cmake"]
    assert (ort_tree / "cmake/deps.txt").read_text() == (FIXTURES / "ort-1.15.1-deps.txt").read_text()
    assert "gitlab.com" in (ort_tree / "cmake/external/eigen.cmake").read_text()


def test_deps_mirror_rewrite_keeps_comments_and_originals(ort_tree, hosted, tmp_path):
    deps_file = ort_tree / "cmake" / "deps.txt"
    original = deps_file.read_text()
    downloads = deps_mirror.checkout_downloads(ort_tree)
    mirror = tmp_path / "mirror"
    fill_mirror(mirror, downloads)
    rewrite = deps_mirror.plan_rewrite(ort_tree, mirror)
    deps_mirror.apply_rewrite(rewrite)
    rewritten = deps_file.read_text()
    deps = deps_mirror.parse_deps(original)
    for dep, line in zip(deps, [l for l in rewritten.splitlines() if l and not l.startswith("#")]):
        name, path, sha1 = line.split(";")
        assert name == dep.name and Path(path).parent == mirror and Path(path).is_file() and sha1 == dep.digest
    assert [l for l in rewritten.splitlines() if l.startswith("#")] == \
        [l for l in original.splitlines() if l.startswith("#")]
    assert deps_mirror.backup_path(deps_file).read_text() == original
    # rewriting again starts from the shipped files, not from the rewritten ones
    assert deps_mirror.plan_rewrite(ort_tree, mirror).new_texts[deps_file] == rewritten
    assert deps_mirror.rewritten_mirror(deps_file) == mirror


def test_deps_mirror_sha1_mismatch_refused_unless_trusted(ort_tree, hosted, tmp_path):
    deps = deps_mirror.checkout_downloads(ort_tree)
    mirror = tmp_path / "mirror"
    fill_mirror(mirror, deps)
    repacked = b"archive made by git archive: same files, other bytes"
    (mirror / "date.zip").write_bytes(repacked)
    (mirror / "v2.4.1.zip").unlink(missing_ok=True)
    expected = next(dep.digest for dep in deps if dep.name == "date")
    with pytest.raises(InputError, match=rf"digest mismatch for 1 archive\(s\) in {mirror}: date \(date.zip: "
                                         rf"{hashlib.sha1(repacked).hexdigest()}, deps.txt: {expected}\)"):
        deps_mirror.plan_rewrite(ort_tree, mirror)
    rewrite = deps_mirror.plan_rewrite(ort_tree, mirror, trust_mirror=True)
    date_line = next(line for line in rewrite.new_texts[ort_tree / "cmake/deps.txt"].splitlines()
                     if line.startswith("date;"))
    assert date_line == f"date;{mirror / 'date.zip'};{hashlib.sha1(repacked).hexdigest()}"
    assert "1 with the mirror's own digest" in rewrite.summary()


@pytest.mark.live
def test_offline_build_works_from_a_partial_mirror(ort_tree, hosted, tmp_path, build_venv, install_venv):
    offline = {"FAKE_ORT_OFFLINE": "1"}
    args = build_args(ort_tree, build_venv, "--venv", install_venv)
    no_mirror = ortprof(args, tmp_path, env=offline)
    assert no_mirror.returncode == 5
    message = no_mirror.stderr.strip().splitlines()[-1]
    assert message.startswith("ortprof: error: ONNX Runtime configure failed fetching abseil_cpp: downloading "
                              "https://github.com/abseil/abseil-cpp/archive/refs/tags/20220623.1.zip failed "
                              "(getaddrinfo(3) failed for github.com:443); offline, build with --deps-mirror "
                              "MIRROR holding abseil_cpp.zip or 20220623.1.zip")

    mirror = tmp_path / "mirror"
    downloads = deps_mirror.checkout_downloads(ort_tree)
    fill_mirror(mirror, downloads, only=NEEDED - {"onnx"})
    logs = sorted((tmp_path / "build/logs").iterdir())
    partial = ortprof(args + ["--deps-mirror", mirror], tmp_path, env=offline)
    assert partial.returncode == 3
    assert "1 of the downloads this build needs are missing from" in partial.stderr and "onnx (onnx.zip" in \
        partial.stderr
    assert sorted((tmp_path / "build/logs").iterdir()) == logs           # refused before anything started

    fill_mirror(mirror, downloads, only={"onnx"})
    plan = ortprof(args + ["--deps-mirror", mirror, "--dry-run"], tmp_path, env=offline)
    assert "# not in the mirror, not fetched by this build (left at their URLs): cxxopts, dlpack" in plan.stdout
    built = ortprof(args + ["--deps-mirror", mirror, "--json"], tmp_path, env=offline)
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["deps_mirror"] == str(mirror)
    log = latest_log(tmp_path / "build").read_text()
    assert "-- Populating protobuf" in log and f"Build files have been written to: {ort_tree}/build/Linux/Debug" \
        in log

    restored = ortprof(["build", "--source", ort_tree, "--restore-deps"], tmp_path)
    assert restored.returncode == 0 and "restored" in restored.stderr
    assert "https://github.com/protocolbuffers/protobuf" in (ort_tree / "cmake/deps.txt").read_text()
    assert "https://gitlab.com/" in (ort_tree / "cmake/external/eigen.cmake").read_text()


@pytest.mark.live
def test_offline_eigen_failure_names_the_mirror_file_or_eigen_path(ort_tree, hosted, tmp_path, build_venv,
                                                                   install_venv):
    offline = {"FAKE_ORT_OFFLINE": "1"}
    mirror = tmp_path / "mirror"
    downloads = deps_mirror.checkout_downloads(ort_tree)
    fill_mirror(mirror, downloads, only=NEEDED - {"eigen"})
    # a deps.txt-only view of the mirror (as before eigen.cmake was scanned): configure fails on eigen
    args = build_args(ort_tree, build_venv, "--venv", install_venv, "--deps-mirror", mirror)
    refused = ortprof(args, tmp_path, env=offline)
    assert refused.returncode == 3 and "eigen (eigen.zip or eigen-d10b27fe" in refused.stderr

    eigen = tmp_path / "eigen"
    (eigen / "Eigen").mkdir(parents=True)
    (eigen / "Eigen" / "Core").write_text("// Eigen stand-in\n")
    built = ortprof(args + ["--eigen-path", eigen, "--json"], tmp_path, env=offline)
    assert built.returncode == 0, built.stderr
    assert f"--use_preinstalled_eigen --eigen_path {eigen}" in " ".join(json.loads(built.stdout)["flags"])
    not_eigen = ortprof(args + ["--eigen-path", tmp_path, "--dry-run"], tmp_path)
    assert not_eigen.returncode == 3 and "not an Eigen source tree (no Eigen/Core in it)" in not_eigen.stderr


def test_failed_configure_names_the_dependency_and_download_on_the_real_log():
    import lzma
    scanner = OutputScanner()
    with lzma.open(FIXTURES / "ort-1.15.1-debug-build-offline-eigen-failure.log.xz", "rt") as log:
        for line in log:
            scanner.feed(line.rstrip("\n"))
    assert scanner.phase == "configure" and scanner.position() is None     # the [x/9] lines were sub-builds
    assert scanner.error_summary() == (
        "configure failed fetching eigen: downloading https://gitlab.com/libeigen/eigen/-/archive/"
        "d10b27fe37736d2944630ecd7557cefa95cf87c9/eigen-d10b27fe37736d2944630ecd7557cefa95cf87c9.zip failed "
        "(getaddrinfo(3) failed for gitlab.com:443)")


@pytest.fixture
def http_host(hosted, ort_tree):
    """Serve the hosted archives over HTTP and point the tree's URLs at that server."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(hosted))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    for path in (ort_tree / "cmake/deps.txt", ort_tree / "cmake/external/eigen.cmake"):
        path.write_text(path.read_text().replace("https://github.com/", base).replace("https://gitlab.com/", base))
    yield hosted
    server.shutdown()


@pytest.mark.live
def test_fetch_deps_fills_a_mirror_and_resumes(ort_tree, http_host, tmp_path):
    mirror = tmp_path / "mirror"
    result = ortprof(["build", "fetch-deps", "--source", ort_tree, mirror, "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    fetched = json.loads(result.stdout)
    assert fetched["schema"] == "ortprof.deps-mirror/1"
    assert {dep["status"] for dep in fetched["dependencies"]} == {"fetched"}
    in_tree = {dep.name for dep in deps_mirror.checkout_downloads(ort_tree)}
    assert sorted(dep["name"] for dep in fetched["dependencies"]) == sorted(in_tree & NEEDED)   # each once
    assert f"{len(in_tree & NEEDED)} dependencies of ONNX Runtime 1.15.1" in result.stderr
    assert next(dep for dep in fetched["dependencies"] if dep["name"] == "eigen")["declared_in"] == \
        "cmake/external/eigen.cmake"
    assert "--all for every platform and option" in result.stderr
    deps_mirror.plan_rewrite(ort_tree, mirror, needed=NEEDED)          # usable as --deps-mirror as is

    everything = json.loads(ortprof(["build", "fetch-deps", "--all", "--source", ort_tree, mirror, "--json"],
                                    tmp_path).stdout)
    statuses = {dep["name"]: dep["status"] for dep in everything["dependencies"]}
    assert set(statuses) == in_tree and statuses["onnx"] == "present" and statuses["cxxopts"] == "fetched"
    assert sorted(path.name for path in mirror.iterdir()) == sorted(
        dep.mirror_name for dep in deps_mirror.checkout_downloads(ort_tree))

    (http_host / "pybind/pybind11/archive/refs/tags/v2.10.1.zip").write_bytes(b"tampered")
    (mirror / "pybind11.zip").unlink()
    bad = ortprof(["build", "fetch-deps", "--source", ort_tree, mirror], tmp_path)
    assert bad.returncode == 5
    assert f"1 of {len(in_tree & NEEDED)} dependencies not mirrored: pybind11: SHA1" in bad.stderr


# --- --ref: cloning ----------------------------------------------------------------------------

@pytest.mark.live
def test_ref_clones_the_tag_and_records_its_commit(ort_tree, tmp_path, build_venv, install_venv):
    git = ["git", "-C", str(ort_tree), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(ort_tree)], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "ORT stand-in"], check=True)
    subprocess.run(git + ["tag", "v1.15.1"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    url = f"file://{ort_tree}"
    work = tmp_path / "work"
    work.mkdir()

    plan = ortprof(["build", "--ref", "1.15.1", "--repo-url", url, "--dry-run"], work)
    assert plan.returncode == 0, plan.stderr
    assert (f"git clone --depth 1 --branch v1.15.1 --recurse-submodules --shallow-submodules {url} "
            f"{work / 'build/onnxruntime'}") in plan.stdout.splitlines()
    assert "# build.py flags are checked against its --help once the checkout exists" in plan.stdout
    assert not (work / "build").exists()

    unknown = ortprof(["build", "--ref", "9.9.9", "--repo-url", url, "--build-venv", build_venv], work)
    assert unknown.returncode == 3
    assert unknown.stderr.strip().splitlines()[-1] == (
        f"ortprof: error: git clone of {url} at v9.9.9 failed: fatal: Remote branch v9.9.9 not found in upstream "
        f"origin")

    built = ortprof(["build", "--ref", "1.15.1", "--repo-url", url, "--build-venv", build_venv, "--venv",
                     install_venv, "--json"], work)
    assert built.returncode == 0, built.stderr
    manifest = json.loads(built.stdout)
    assert manifest["source"] == str(work / "build/onnxruntime") and manifest["ort_commit"] == commit
    assert "--skip_submodule_sync" in manifest["flags"]                  # a clone without .gitmodules

    other = ortprof(["build", "--ref", "v1.16.0", "--repo-url", url, "--build-venv", build_venv, "--dry-run"],
                    work)
    assert other.returncode == 3 and "already exists and is not a clone at v1.16.0" in other.stderr


# --- finding builds again ----------------------------------------------------------------------

def test_resolve_build_explains_what_is_missing(tmp_path):
    with pytest.raises(InputError, match=r"no RelWithDebInfo build in .*`ortprof build --config RelWithDebInfo`"):
        resolve_build("relwithdebinfo", tmp_path)
    with pytest.raises(InputError, match="neither a config"):
        resolve_build("Fast", tmp_path)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "ortprof.run/1"}))
    with pytest.raises(InputError, match="not an ortprof build manifest"):
        resolve_build(str(other), tmp_path)
    gone = tmp_path / "manifest-debug.json"
    gone.write_text(json.dumps({"schema": "ortprof.build/1", "config": "Debug",
                                "site_packages": str(tmp_path / "deleted-venv/lib")}))
    with pytest.raises(InputError, match="which is gone; re-run `ortprof build --config Debug`"):
        resolve_build("Debug", tmp_path)
