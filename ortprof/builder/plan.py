"""One build as a list of steps: the exact commands `ortprof build` runs and --dry-run prints."""
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import psutil

from ..errors import InputError
from . import checkout as checkouts
from . import venvs
from .shell import shell_line

GIB = 1024 ** 3
# Peak resident memory of one compile job, with headroom; ORT's Debug objects
# are big but cheap to produce, optimised ones (-O2/-O3) need more.
JOB_MEMORY_GIB = {"Debug": 1.5, "RelWithDebInfo": 2.0, "Release": 2.0, "MinSizeRel": 2.0}
FRAME_POINTER_DEFINES = ["CMAKE_C_FLAGS=-fno-omit-frame-pointer", "CMAKE_CXX_FLAGS=-fno-omit-frame-pointer"]
NO_UNIT_TESTS_DEFINE = "onnxruntime_BUILD_UNIT_TESTS=OFF"
# Without these build.py cannot produce what ortprof installs.
ESSENTIAL_FLAGS = ("--config", "--update", "--build", "--enable_pybind", "--build_wheel")


@dataclass
class BuildOptions:
    config: str = "Debug"
    source: Optional[Path] = None
    ref: Optional[str] = None
    repo_url: str = checkouts.ORT_REPO_URL
    build_root: Path = Path("build")
    jobs: Optional[int] = None
    with_tests: bool = False
    ccache: Optional[bool] = None          # None: use it when installed
    frame_pointers: bool = True
    deps_mirror: Optional[Path] = None
    trust_mirror: bool = False
    eigen_path: Optional[Path] = None      # an Eigen source tree instead of ORT's eigen download
    build_venv: Optional[Path] = None      # an existing venv with the build tools, used as is
    python: str = sys.executable           # interpreter the wheel is built for
    venv: Optional[Path] = None            # install venv; default <build_root>/venv-<config>
    install_current: bool = False
    passthrough: List[str] = field(default_factory=list)
    verbose: bool = False


@dataclass
class Step:
    kind: str                 # clone | build-venv | build-venv-tools | build | venv | constraints | install
    title: str
    command: List[str]
    env: dict = field(default_factory=dict)
    cwd: Optional[Path] = None
    done: bool = False        # already satisfied (resumed build): skipped, shown as a comment
    note: str = ""
    redirect: Optional[Path] = None   # stdout goes to this file

    def shell(self):
        line = shell_line(self.command, self.env, self.cwd)
        return f"{line} > {shlex.quote(str(self.redirect))}" if self.redirect else line


@dataclass
class BuildPlan:
    options: BuildOptions
    config: str
    build_root: Path
    checkout: Optional[checkouts.Checkout]   # None until a --ref is cloned
    source_dir: Path
    ort_version: Optional[str]
    jobs: int
    jobs_reason: str
    build_venv: Path
    build_venv_is_ours: bool
    build_requirements: List[str]
    build_flags: List[str]
    dropped_flags: List[str]
    install_venv: Optional[Path]
    install_python: Path
    constraints: List[str]
    constraints_file: Optional[Path]
    expected_wheel: Path
    steps: List[Step]
    log_path: Path
    manifest_path: Path
    state_path: Path
    flags_checked: bool                      # False when build.py --help could not be read yet

    @property
    def build_dir(self):
        return self.source_dir / "build" / "Linux" / self.config

    @property
    def build_python(self):
        return venvs.venv_python(self.build_venv)

    @property
    def step_times_path(self):
        """Where ortprof keeps ninja's log of the last complete compile of this version and config
        (None when the version is unknown: another tree's times would mislead)."""
        if not self.ort_version:
            return None
        return self.build_root / f"step-times-{self.config.lower()}-{self.ort_version}.ninja_log"


def default_jobs(config, cores=None, available_bytes=None):
    """Parallel compile jobs that fit both the CPUs and the free memory: (jobs, reason)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if available_bytes is None:
        available_bytes = psutil.virtual_memory().available
    per_job = JOB_MEMORY_GIB[config]
    by_memory = int(available_bytes / (per_job * GIB))
    jobs = max(1, min(cores, by_memory))
    reason = (f"{cores} cores, {available_bytes / GIB:.1f} GiB available / {per_job} GiB per {config} job")
    return jobs, reason


def manifest_path(build_root, config):
    return Path(build_root) / f"manifest-{config.lower()}.json"


def state_path(build_root, config):
    return Path(build_root) / f"state-{config.lower()}.json"


def resolve_source(options, build_root):
    """(checkout or None, source dir, clone step needed?) from --source / --ref / defaults."""
    if options.source is not None and options.ref is not None:
        raise InputError("give either --source DIR or --ref TAG, not both")
    if options.source is not None:
        return checkouts.inspect_checkout(options.source), Path(options.source).resolve(), False
    if options.ref is not None:
        dest = build_root / "onnxruntime"
        if checkouts.existing_clone_matches(dest, options.ref):
            return checkouts.inspect_checkout(dest), dest, False
        return None, dest, True
    for candidate in (build_root / "onnxruntime", Path.cwd()):
        if checkouts.looks_like_checkout(candidate):
            return checkouts.inspect_checkout(candidate), candidate.resolve(), False
    raise InputError("no ONNX Runtime source: give --source DIR (a checkout) or --ref TAG (e.g. v1.15.1, "
                     "cloned into build/onnxruntime)")


def make_plan(options, supported=None):
    """Work out every step of a build without changing anything on disk.

    `supported` is what the checkout's build.py --help lists (read here when
    None and a checkout exists).
    """
    config = checkouts.canonical_config(options.config)
    if config is None:
        raise InputError(f"unknown config {options.config!r}; one of {', '.join(checkouts.CONFIGS)}")
    build_root = Path(options.build_root).resolve()
    checkout, source_dir, needs_clone = resolve_source(options, build_root)
    ort_version = checkout.version if checkout else checkouts.version_of_ref(options.ref)
    cmake_minimum = checkout.cmake_minimum if checkout else checkouts.estimated_cmake_minimum(ort_version)

    if options.jobs is not None:
        if options.jobs < 1:
            raise InputError("--jobs must be at least 1")
        jobs, jobs_reason = options.jobs, "from --jobs"
    else:
        jobs, jobs_reason = default_jobs(config)

    if options.build_venv is not None:
        build_venv = Path(options.build_venv).resolve()
        if not venvs.venv_python(build_venv).exists():
            raise InputError(f"--build-venv {build_venv}: no bin/python there (give an existing venv)")
        ours, requirements = False, []
    else:
        build_venv = build_root / "venv-build"
        ours, requirements = True, venvs.build_requirements(ort_version, cmake_minimum)

    steps = []
    if needs_clone:
        steps.append(Step("clone", f"clone ONNX Runtime {checkouts.tag_for_ref(options.ref)}",
                          checkouts.clone_command(options.ref, options.repo_url, source_dir)))
    if ours:
        ready = venvs.build_venv_ready(build_venv, requirements)
        steps.append(Step("build-venv", "create the build venv", venvs.create_command(options.python, build_venv),
                          done=ready or venvs.venv_python(build_venv).exists()))
        steps.append(Step("build-venv-tools", "install the build tools",
                          venvs.pip_install_command(venvs.venv_python(build_venv), requirements), done=ready))

    if checkout is not None and supported is None:
        supported = checkouts.read_supported_flags(checkout, options.python)
    build_flags, dropped = _build_flags(options, config, jobs, checkout, build_venv, supported)
    build_env = {"PATH": f"{build_venv / 'bin'}:$PATH",
                 "NINJA_STATUS": "[%f/%t] ",      # the [x/N] the progress bar reads
                 "PYTHONUNBUFFERED": "1",          # keep build.py's lines in order with ninja's
                 # honoured by CMake 4 only: lets dependencies declaring an old minimum configure
                 "CMAKE_POLICY_VERSION_MINIMUM": "3.5"}
    steps.append(Step("build", f"build ONNX Runtime {ort_version or ''} {config}".replace("  ", " "),
                      ["./" + checkouts.BUILD_SCRIPT, *build_flags], env=build_env, cwd=source_dir))

    # the wheel is tagged for the interpreter that builds it
    facts = venvs.python_facts(options.python if ours else venvs.venv_python(build_venv)) or {}
    expected_wheel = (source_dir / "build" / "Linux" / config / "dist" /
                      f"onnxruntime-{ort_version or 'VERSION'}-{_wheel_tag(facts)}.whl")
    constraints = venvs.runtime_constraints(ort_version)
    constraints_file = build_root / f"constraints-{config.lower()}.txt" if constraints else None
    if options.install_current:
        if options.venv is not None:
            raise InputError("give either --install (current environment) or --venv DIR, not both")
        install_venv, install_python = None, Path(options.python)
    else:
        install_venv = Path(options.venv).resolve() if options.venv else build_root / f"venv-{config.lower()}"
        install_python = venvs.venv_python(install_venv)
        steps.append(Step("venv", "create the venv the build is installed into",
                          venvs.create_command(venvs.venv_python(build_venv), install_venv),
                          done=install_python.exists()))
    if constraints_file is not None:
        steps.append(Step("constraints", f"pin {', '.join(constraints)} for ORT {ort_version}",
                          ["printf", "%s\\n", *constraints], redirect=constraints_file))
    deps_install, forced_install = venvs.wheel_install_commands(install_python, expected_wheel, constraints_file)
    steps.append(Step("install", "install the wheel and its dependencies", deps_install))
    steps.append(Step("install", "reinstall this very build (a rebuild keeps the version number)", forced_install))

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return BuildPlan(
        options=options, config=config, build_root=build_root, checkout=checkout, source_dir=source_dir,
        ort_version=ort_version, jobs=jobs, jobs_reason=jobs_reason, build_venv=build_venv,
        build_venv_is_ours=ours, build_requirements=requirements, build_flags=build_flags,
        dropped_flags=dropped, install_venv=install_venv, install_python=install_python,
        constraints=constraints, constraints_file=constraints_file, expected_wheel=expected_wheel, steps=steps,
        log_path=_new_log_path(build_root / "logs", f"{config.lower()}-{stamp}"),
        manifest_path=manifest_path(build_root, config), state_path=state_path(build_root, config),
        flags_checked=supported is not None)


def _new_log_path(directory, stem):
    """A log name no earlier run used (two runs can start within the same second)."""
    path, number = directory / f"{stem}.log", 1
    while path.exists():
        number += 1
        path = directory / f"{stem}-{number}.log"
    return path


def _wheel_tag(facts):
    version = facts.get("version", f"{sys.version_info[0]}.{sys.version_info[1]}").replace(".", "")
    platform = facts.get("platform", "linux_x86_64")
    return f"cp{version}-cp{version}-{platform}"


def _build_flags(options, config, jobs, checkout, build_venv, supported):
    """The seed's flags plus what makes the build work offline, as root and faster.

    Returns (flags, dropped): flags the checkout's build.py does not list in its
    --help are dropped (with a note), so older and newer ORT both work.
    """
    wanted = [["--config", config], ["--build_shared_lib"], ["--parallel", str(jobs)], ["--enable_pybind"],
              ["--build_wheel"], ["--skip_tests"], ["--update"], ["--build"],
              ["--cmake_generator", "Ninja"]]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        wanted.append(["--allow_running_as_root"])
    if checkout is None or not checkout.is_git or not checkout.missing_submodules:
        wanted.append(["--skip_submodule_sync"])   # nothing to sync, and syncing needs network
    cmake = build_venv / "bin" / "cmake"
    if not options.build_venv or cmake.exists():
        wanted.append(["--cmake_path", str(cmake)])
    defines = []
    if not options.with_tests:
        defines.append(NO_UNIT_TESTS_DEFINE)
    if options.frame_pointers:
        defines += FRAME_POINTER_DEFINES
    if use_ccache(options):
        if supported is None or "--use_cache" in supported:
            wanted.append(["--use_cache"])
        else:
            defines += ["CMAKE_C_COMPILER_LAUNCHER=ccache", "CMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    if options.eigen_path is not None:
        wanted.append(["--use_preinstalled_eigen", "--eigen_path", str(_eigen_tree(options.eigen_path))])
    if defines:
        wanted.append(["--cmake_extra_defines", *defines])

    flags, dropped = [], []
    for flag in wanted:
        if supported is not None and flag[0] not in supported:
            if flag[0] == "--use_preinstalled_eigen":
                raise InputError(f"--eigen-path: {checkout.build_py} (ORT {checkout.version}) does not support "
                                 f"--use_preinstalled_eigen")
            if flag[0] in ESSENTIAL_FLAGS:
                raise InputError(f"{checkout.build_py} does not support {flag[0]}; is this an ONNX Runtime "
                                 f"checkout with Python bindings?")
            dropped.append(flag[0])
            continue
        flags += flag
    if supported is not None:
        unknown = [arg for arg in options.passthrough if arg.startswith("--") and arg not in supported]
        if unknown:
            raise InputError(f"{checkout.build_py} (ORT {checkout.version}) does not support "
                             f"{', '.join(unknown)} (see its --help)")
    # after the nargs='+' defines group only options may follow, which pass-through flags are
    return flags + list(options.passthrough), dropped


def _eigen_tree(path):
    path = Path(path).resolve()
    if not (path / "Eigen" / "Core").is_file():
        raise InputError(f"--eigen-path {path}: not an Eigen source tree (no Eigen/Core in it)")
    return path


def use_ccache(options):
    if options.ccache is None:
        return shutil.which("ccache") is not None
    return options.ccache


def render_script(plan, notes=()):
    """The dry-run output: a shell script of the plan, comments for what is skipped or decided."""
    lines = ["#!/bin/sh", "# ortprof build plan (dry run): the commands `ortprof build` would run", "set -e"]
    source = plan.checkout.path if plan.checkout else plan.source_dir
    lines.append(f"# ONNX Runtime {plan.ort_version or '(version unknown)'} from {source}, config {plan.config}")
    lines.append(f"# jobs: {plan.jobs} ({plan.jobs_reason})")
    if plan.build_venv_is_ours:
        lines.append(f"# build venv {plan.build_venv}: {' '.join(plan.build_requirements)}")
    else:
        lines.append(f"# build venv {plan.build_venv}: given with --build-venv, used as is")
    if plan.dropped_flags:
        lines.append(f"# not supported by this checkout's build.py, left out: {' '.join(plan.dropped_flags)}")
    if not plan.flags_checked:
        lines.append("# build.py flags are checked against its --help once the checkout exists")
    lines += [f"# {note}" for note in notes]
    for step in plan.steps:
        lines.append(f"# {step.title}" + (f" ({step.note})" if step.note else ""))
        lines.append(("# already done: " if step.done else "") + step.shell())
    lines.append(f"# then ortprof writes {plan.manifest_path}")
    return "\n".join(lines) + "\n"
