#!/usr/bin/env python3
"""Stand-in for ONNX Runtime's tools/ci_build/build.py, for ortprof's tests.

It behaves like the real script wherever `ortprof build` depends on it:
- argparse options of the same names; unknown flags are rejected, `--help`
  lists what is supported (FAKE_ORT_HIDE_FLAGS removes some, like an older ORT);
- refuses to run as root without --allow_running_as_root;
- syncs submodules unless --skip_submodule_sync (which needs a git checkout);
- --update "configures": checks the cmake version against the Linux branch
  of cmake/CMakeLists.txt and populates what a CPU build fetches (FETCHED,
  from cmake/deps.txt, plus eigen from cmake/external/eigen.cmake unless
  --use_preinstalled_eigen) with FetchContent-style [x/9] sub-build lines: a
  local archive must exist and match its SHA1; a URL "downloads" unless
  FAKE_ORT_OFFLINE=1, when it fails the way CMake reports it;
- configure writes a CMake-style build.ninja listing the compile's steps;
- --build prints ninja-style `[x/N] Building CXX object ...` lines, records
  finished steps in the build directory (and in a .ninja_log, as ninja does)
  and, when run again, does only the remaining ones (N counts what is left,
  as ninja does); the last step compiles a small native module with the C
  compiler and the configured flags;
- --build_wheel writes build/Linux/<config>/dist/onnxruntime-<version>-*.whl,
  a wheel of a tiny pure-Python `onnxruntime` package plus that module.

Failure knobs (environment), step numbers counted over the whole build:
  FAKE_ORT_STEPS=N          compile steps besides unit tests (default 40)
  FAKE_ORT_STEP_SECONDS=S   time per step (default 0.002)
  FAKE_ORT_FAIL_AT=K        a compile error at step K
  FAKE_ORT_OOM_AT=K         the compiler is killed (out of memory) at step K
  FAKE_ORT_INTERRUPT_AT=K   SIGINT to the process group at step K (Ctrl-C)
  FAKE_ORT_HOLD_AT=K        after step K's output (its line, or its failure), wait until the
                            file FAKE_ORT_RELEASE exists (at most 60 s), having created
                            FAKE_ORT_RELEASE.held: like ninja waiting for its other jobs
"""
import argparse
import base64
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ["Debug", "MinSizeRel", "Release", "RelWithDebInfo"]
OPT_FLAGS = {"Debug": "-O0 -g", "RelWithDebInfo": "-O2 -g", "Release": "-O3", "MinSizeRel": "-Os"}
SOURCES = [
    "onnxruntime/core/common/threadpool.cc",
    "onnxruntime/core/framework/allocator.cc",
    "onnxruntime/core/framework/execution_frame.cc",
    "onnxruntime/core/framework/session_state.cc",
    "onnxruntime/core/graph/graph.cc",
    "onnxruntime/core/mlas/lib/sgemm.cpp",
    "onnxruntime/core/optimizer/graph_transformer_utils.cc",
    "onnxruntime/core/platform/posix/env.cc",
    "onnxruntime/core/providers/cpu/math/gemm.cc",
    "onnxruntime/core/session/inference_session.cc",
    "onnxruntime/python/onnxruntime_pybind_state.cc",
]
TEST_SOURCES = ["onnxruntime/test/framework/allocator_test.cc", "onnxruntime/test/providers/cpu/math/gemm_test.cc"]


def log(message):
    print(message, flush=True)


def parse_arguments():
    hidden = set(os.environ.get("FAKE_ORT_HIDE_FLAGS", "").split())
    parser = argparse.ArgumentParser(description="ONNX Runtime CI build driver (test stand-in).")

    def add(flag, **kwargs):
        if flag not in hidden:
            parser.add_argument(flag, **kwargs)

    add("--build_dir", required=True, help="Path to the build directory.")
    add("--config", nargs="+", default=["Debug"], choices=CONFIGS, help="Configuration(s) to build.")
    add("--update", action="store_true", help="Update makefiles (run cmake).")
    add("--build", action="store_true", help="Build.")
    add("--parallel", nargs="?", const=0, default=1, type=int,
        help="Use parallel build. Optional value: number of jobs, 0 = number of cores.")
    add("--build_shared_lib", action="store_true", help="Build a shared library for ONNX Runtime.")
    add("--enable_pybind", action="store_true", help="Enable Python bindings.")
    add("--build_wheel", action="store_true", help="Build the Python wheel.")
    add("--skip_tests", action="store_true", help="Skip running the unit tests.")
    add("--skip_submodule_sync", action="store_true", help="Don't do a 'git submodule update'.")
    add("--allow_running_as_root", action="store_true", help="Allow build.py to run as root.")
    add("--cmake_generator", choices=["Ninja", "Unix Makefiles"], default="Unix Makefiles",
        help="Specify the generator that CMake invokes.")
    add("--cmake_extra_defines", nargs="+", action="append",
        help="Extra definitions to pass to CMake, e.g. FOO=BAR.")
    add("--cmake_path", default="cmake", help="Path to the CMake program.")
    add("--use_cache", action="store_true", help="Use compiler cache (ccache).")
    add("--use_dnnl", action="store_true", help="Build with oneDNN (accepted, ignored).")
    add("--use_preinstalled_eigen", action="store_true", help="Use pre-installed Eigen.")
    add("--eigen_path", help="Path to pre-installed Eigen.")
    return parser.parse_args()


def fail(message):
    log(f"build.py [ERROR] - {message}")
    sys.exit(1)


def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def check_cmake(cmake_path):
    # the else() branch: the Linux minimum (the first call is the Windows one)
    wanted = re.findall(r"cmake_minimum_required\(VERSION ([\d.]+)",
                        (SOURCE_ROOT / "cmake" / "CMakeLists.txt").read_text())[-1]
    executable = shutil.which(cmake_path)
    if executable is None:
        fail(f"Unable to find CMake executable: {cmake_path}")
    output = subprocess.run([executable, "--version"], capture_output=True, text=True).stdout
    have = re.search(r"version ([\d.]+)", output).group(1)
    if version_tuple(have) < version_tuple(wanted):
        log("CMake Error at CMakeLists.txt:5 (cmake_minimum_required):")
        log(f"  CMake {wanted} or higher is required.  You are running version {have}")
        fail("cmake configure failed")
    log(f"-- The CMake version is {have}")


# what ORT's onnxruntime_external_deps.cmake fetches for a Linux CPU build with Python bindings
FETCHED = ["abseil_cpp", "date", "flatbuffers", "google_nsync", "microsoft_gsl", "microsoft_wil", "mp11", "json",
           "onnx", "protobuf", "pybind11", "pytorch_cpuinfo", "re2", "safeint"]
FETCH_CONTENT = "/usr/share/cmake/Modules/FetchContent.cmake"


def downloads(args, defines):
    """(name, URL, SHA1) of each dependency configure populates, in order."""
    table = {}
    for line in (SOURCE_ROOT / "cmake" / "deps.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, url, sha1 = line.split(";")[:3]
            table[name] = (name, url, sha1)
    wanted = FETCHED + (["googletest"] if defines.get("onnxruntime_BUILD_UNIT_TESTS", "ON") != "OFF" else [])
    found = [table[name] for name in wanted if name in table]
    if not args.use_preinstalled_eigen:
        text = (SOURCE_ROOT / "cmake" / "external" / "eigen.cmake").read_text()
        found.append(("eigen", re.search(r"^\s*URL\s+(\S+)", text, re.MULTILINE).group(1),
                      re.search(r"URL_HASH SHA1=(\w+)", text).group(1)))
    elif not (Path(args.eigen_path or "") / "Eigen" / "Core").is_file():
        log(f"CMake Error at external/eigen.cmake:4: eigen_SOURCE_PATH {args.eigen_path} has no Eigen/Core")
        fail("cmake configure failed")
    return found


def populate(name, url, sha1, config_dir):
    subbuild = config_dir / "_deps" / f"{name}-subbuild"
    log(f"-- Populating {name}")
    log(f"-- Build files have been written to: {subbuild}")
    log(f"[1/9] Creating directories for '{name}-populate'")
    log(f"[1/9] Performing download step (download, verify and extract) for '{name}-populate'")
    error = None
    if url.startswith("/"):
        archive = Path(url)
        if not archive.is_file():
            error = [f"  error: downloading '{url}' failed", f"  file {url} does not exist"]
        elif hashlib.sha1(archive.read_bytes()).hexdigest() != sha1:
            error = [f"  HASH mismatch for file: {url}", f"    expected hash: [{sha1}]",
                     f"      actual hash: [{hashlib.sha1(archive.read_bytes()).hexdigest()}]"]
    elif os.environ.get("FAKE_ORT_OFFLINE") == "1":
        host = url.split("/")[2]
        error = [f"-- Using src='{url}'", "CMake Error at download.cmake:163 (message):", "  Each download failed!",
                 f"    error: downloading '{url}' failed", "          status_code: 6",
                 '          status_string: "Could not resolve hostname"', f"  getaddrinfo(3) failed for {host}:443"]
    if error:
        for line in error:
            log(line)
        log(f"FAILED: [code=1] {name}-populate-prefix/src/{name}-populate-stamp/{name}-populate-download")
        log("ninja: build stopped: subcommand failed.")
        log(f"CMake Error at {FETCH_CONTENT}:1918 (message):")
        log(f"  Build step for {name} failed: 1")
        log("-- Configuring incomplete, errors occurred!")
        fail("cmake configure failed")
    for step, what in enumerate(["update", "patch", "configure", "build", "install", "test"], 2):
        log(f"[{step}/9] No {what} step for '{name}-populate'")
    log(f"[9/9] Completed '{name}-populate'")


def read_defines(args):
    defines = {}
    for group in args.cmake_extra_defines or []:
        for item in group:
            key, _, value = item.partition("=")
            defines[key] = value
    return defines


def step_output(step):
    """What a step builds: the path its ninja description ends with."""
    return step.rsplit(" ", 1)[1]


def write_build_ninja(config, config_dir, defines):
    """build.ninja as CMake's Ninja generator writes it: rules in an included file, one build
    statement per object, the module's link, `all` and its default."""
    rules = config_dir / "CMakeFiles" / "rules.ninja"
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text(f"rule CXX_COMPILER__onnxruntime_unscanned_{config}\n  command = c++ -c $in -o $out\n"
                     f"  description = Building CXX object $out\n\n"
                     f"rule CXX_MODULE_LIBRARY_LINKER__onnxruntime_pybind11_state_{config}\n"
                     f"  command = c++ -shared $in -o $out\n  description = Linking CXX shared module $out\n")
    lines = ["# CMAKE generated file: DO NOT EDIT!", "include CMakeFiles/rules.ninja", ""]
    steps = build_steps(defines)
    objects = [step_output(step) for step in steps[:-1]]
    for step, output in zip(steps[:-1], objects):
        source = SOURCE_ROOT / step.split(".dir/", 1)[-1].rsplit(".", 2)[0]
        lines += [f"build {output}: CXX_COMPILER__onnxruntime_unscanned_{config} {source} || "
                  f"cmake_object_order_depends_target_onnxruntime",
                  f"  FLAGS = {OPT_FLAGS[config]} $", "      -std=gnu++17", ""]
    module = step_output(steps[-1])
    lines += [f"build {module}: CXX_MODULE_LIBRARY_LINKER__onnxruntime_pybind11_state_{config} $",
              *[f"    {output} $" for output in objects], "    ", "",
              "build cmake_object_order_depends_target_onnxruntime: phony", "",
              f"build all: phony {module}", "", "default all", ""]
    (config_dir / "build.ninja").write_text("\n".join(lines))


def configure(args, config_dir, defines):
    check_cmake(args.cmake_path)
    config_dir.mkdir(parents=True, exist_ok=True)
    for name, url, sha1 in downloads(args, defines):
        populate(name, url, sha1, config_dir)
    write_build_ninja(args.config[0], config_dir, defines)
    cache = [f"CMAKE_BUILD_TYPE={args.config[0]}", f"CMAKE_GENERATOR={args.cmake_generator}"]
    cache += [f"{key}={value}" for key, value in defines.items()]
    (config_dir / "CMakeCache.txt").write_text("\n".join(cache) + "\n")
    log("-- Configuring done")
    log("-- Generating done")
    log(f"-- Build files have been written to: {config_dir}")


def build_steps(defines):
    count = int(os.environ.get("FAKE_ORT_STEPS", "40"))
    steps = [f"Building CXX object CMakeFiles/onnxruntime.dir/{SOURCES[i % len(SOURCES)]}.{i}.o"
             for i in range(count)]
    if defines.get("onnxruntime_BUILD_UNIT_TESTS", "ON") != "OFF":
        steps += [f"Building CXX object CMakeFiles/onnxruntime_test_all.dir/{TEST_SOURCES[i % 2]}.{i}.o"
                  for i in range(10)]
    steps.append("Linking CXX shared module onnxruntime_pybind11_state.so")
    return steps


def knob(name):
    value = os.environ.get(name)
    return int(value) if value else None


def hold(number):
    """FAKE_ORT_HOLD_AT: stay at this point until the test releases the build."""
    release = os.environ.get("FAKE_ORT_RELEASE")
    if number != knob("FAKE_ORT_HOLD_AT") or not release:
        return
    Path(release + ".held").touch()
    deadline = time.monotonic() + 60
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def compile_native_module(config, defines, output):
    compiler = shutil.which("cc")
    if compiler is None:
        log("warning: no C compiler; the wheel gets no native module")
        return
    flags = OPT_FLAGS[config].split() + defines.get("CMAKE_C_FLAGS", "").split()
    source = SOURCE_ROOT / "onnxruntime" / "core" / "platform" / "native_module.c"
    subprocess.run([compiler, "-shared", "-fPIC", *flags, "-o", str(output), str(source)], check=True)


def compile_all(args, config_dir, defines):
    if not (config_dir / "CMakeCache.txt").exists():
        fail(f"{config_dir} is not configured: run with --update first")
    steps = build_steps(defines)
    done_file = config_dir / ".fake_ninja_done"
    done = set(done_file.read_text().splitlines()) if done_file.exists() else set()
    remaining = [(number, step) for number, step in enumerate(steps, 1) if step not in done]
    jobs = args.parallel or os.cpu_count()
    log(f"Running subprocess in '{config_dir}': {args.cmake_path} --build {config_dir} "
        f"--config {args.config[0]} -- -j{jobs}")
    if args.use_cache:
        log("ccache: compiler cache enabled")
    if not remaining:
        log("ninja: no work to do.")
        return
    delay = float(os.environ.get("FAKE_ORT_STEP_SECONDS", "0.002"))
    ninja_log = config_dir / ".ninja_log"
    if not ninja_log.exists():
        ninja_log.write_text("# ninja log v5\n")
    started = time.monotonic()
    for index, (number, step) in enumerate(remaining, 1):
        step_started = int((time.monotonic() - started) * 1000)
        if number == knob("FAKE_ORT_INTERRUPT_AT"):
            os.killpg(os.getpgrp(), signal.SIGINT)
            time.sleep(5)
        log(f"[{index}/{len(remaining)}] {step}")
        source = step.split(".dir/", 1)[-1].rsplit(".", 2)[0]
        if number == knob("FAKE_ORT_FAIL_AT"):
            log(f"FAILED: CMakeFiles/onnxruntime.dir/{source}.o")
            log(f"/usr/bin/c++ {OPT_FLAGS[args.config[0]]} -std=gnu++17 -c {SOURCE_ROOT}/{source}")
            log(f"{SOURCE_ROOT}/{source}:42:10: error: 'SpinPauseTypo' was not declared in this scope")
            log("   42 |   SpinPauseTypo();")
            hold(number)
            log("ninja: build stopped: subcommand failed.")
            fail("Failed to build: cmake --build returned 1")
        if number == knob("FAKE_ORT_OOM_AT"):
            log(f"FAILED: CMakeFiles/onnxruntime.dir/{source}.o")
            log(f"/usr/bin/c++ {OPT_FLAGS[args.config[0]]} -std=gnu++17 -c {SOURCE_ROOT}/{source}")
            log("c++: fatal error: Killed signal terminated program cc1plus")
            log("compilation terminated.")
            log("ninja: build stopped: subcommand failed.")
            fail("Failed to build: cmake --build returned 1")
        if step.startswith("Linking"):
            compile_native_module(args.config[0], defines, config_dir / "onnxruntime_pybind11_state.so")
        time.sleep(delay)
        with open(done_file, "a") as stream:
            stream.write(step + "\n")
        with open(ninja_log, "a") as stream:
            end = int((time.monotonic() - started) * 1000)
            stream.write(f"{step_started}\t{end}\t0\t{step_output(step)}\t{hashlib.md5(step.encode()).hexdigest()[:16]}\n")
        hold(number)


def wheel_tag():
    python = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return f"{python}-{python}-{platform}"


def record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(config, config_dir):
    version = (SOURCE_ROOT / "VERSION_NUMBER").read_text().strip()
    log("running bdist_wheel")
    files = {
        "onnxruntime/__init__.py": (
            f'"""Test stand-in for ONNX Runtime built from source."""\n'
            f'__version__ = "{version}"\nbuild_config = "{config}"\n\n\n'
            f'def get_device():\n    return "CPU"\n').encode(),
        "onnxruntime/capi/__init__.py": b"",
    }
    native = config_dir / "onnxruntime_pybind11_state.so"
    if native.exists():
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        files[f"onnxruntime/capi/onnxruntime_pybind11_state{suffix}"] = native.read_bytes()
    info = f"onnxruntime-{version}.dist-info"
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: onnxruntime\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: fake-bdist_wheel\n"
                              f"Root-Is-Purelib: false\nTag: {wheel_tag()}\n").encode()
    record = "\n".join(record_line(name, data) for name, data in files.items()) + f"\n{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    dist = config_dir / "dist"
    dist.mkdir(exist_ok=True)
    wheel = dist / f"onnxruntime-{version}-{wheel_tag()}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    log(f"creating '{wheel}' and adding files to it")


def main():
    args = parse_arguments()
    log("build.py arguments: " + " ".join(sys.argv[1:]))
    if os.geteuid() == 0 and not getattr(args, "allow_running_as_root", False):
        fail("Running as root is not allowed. If you really want to, use '--allow_running_as_root'.")
    if not getattr(args, "skip_submodule_sync", False):
        log("Running: git submodule sync --recursive")
        result = subprocess.run(["git", "submodule", "sync", "--recursive"], cwd=SOURCE_ROOT,
                                capture_output=True, text=True)
        if result.returncode != 0:
            log(result.stderr.strip())
            fail("git submodule sync failed")
    config = args.config[0]
    config_dir = Path(args.build_dir) / config
    defines = read_defines(args)
    if args.update:
        configure(args, config_dir, defines)
    if args.build:
        compile_all(args, config_dir, defines)
        if args.build_wheel:
            if not args.enable_pybind:
                fail("--build_wheel needs --enable_pybind")
            build_wheel(config, config_dir)


if __name__ == "__main__":
    main()
