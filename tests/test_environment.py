"""Machine and process facts, read for real on this machine."""
import json
import os
import re
import subprocess
import sys

import pytest

from ortprof import environment as env
from ortprof.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_ORT_PYTHON = os.path.join(ROOT, ".venv", "ort-1.15.1", "bin", "python")
needs_perf = pytest.mark.skipif(env.find_tool("perf") is None, reason="perf is not installed")


def test_find_tool_falls_back_to_the_directory_of_this_python(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert env.find_tool("py-spy") == os.path.join(os.path.dirname(sys.executable), "py-spy")
    assert env.find_tool("perf") is None
    assert env.find_tool("no-such-tool-anywhere") is None


@needs_perf
@pytest.mark.live
def test_perf_info_matches_perf_version():
    info = env.perf_info()
    out = subprocess.run([info["path"], "--version"], capture_output=True, text=True).stdout
    assert info["error"] is None
    assert info["version"] and info["version"] in out


def test_perf_info_is_none_without_perf(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert env.perf_info() is None


def read_int(path):
    with open(path) as stream:
        return int(stream.read())


def test_kernel_settings_are_read_from_proc():
    assert env.perf_event_paranoid() == read_int("/proc/sys/kernel/perf_event_paranoid")
    assert env.kptr_restrict() == read_int("/proc/sys/kernel/kptr_restrict")
    yama = "/proc/sys/kernel/yama/ptrace_scope"
    assert env.ptrace_scope() == (read_int(yama) if os.path.exists(yama) else None)


def test_cpu_info_flags_match_proc_cpuinfo():
    info = env.cpu_info()
    with open("/proc/cpuinfo") as stream:
        flags_line = next((line for line in stream if line.startswith(("flags", "Features"))), "")
    flags = set(flags_line.partition(":")[2].split())
    assert info["logical_cores"] == os.cpu_count()
    assert info["physical_cores"] is None or 1 <= info["physical_cores"] <= info["logical_cores"]
    assert info["flags_of_interest"]["waitpkg"] == ("waitpkg" in flags)
    assert info["flags_of_interest"]["avx2"] == ("avx2" in flags)
    assert info["model"]


def test_kubernetes_variable_means_container(monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    info = env.container_info()
    assert info["in_container"] is True
    assert "KUBERNETES_SERVICE_HOST is set" in info["evidence"]


def test_dockerenv_alone_on_a_non_overlay_root_is_not_a_container(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    fstype, _ = env._root_filesystem()
    if not os.path.exists("/.dockerenv") or fstype == "overlay":
        pytest.skip("needs /.dockerenv on a non-overlay root (a VM built from a container image)")
    info = env.container_info()
    if any("cgroup mentions" in item or ".containerenv" in item for item in info["evidence"]):
        pytest.skip("real container markers present")
    assert info["in_container"] is False and info["kind"] is None
    assert any("/.dockerenv exists, but / is" in item for item in info["evidence"])


def test_probes_agree_with_privilege():
    if os.geteuid() != 0:
        pytest.skip("as root every probe must succeed")
    assert env.probe_perf_event_open() == 0
    assert env.probe_perf_event_open(kernel=True) == 0
    assert env.probe_perf_event_open(user_stacks=True) == 0
    assert env.probe_process_vm_readv() == 0


@needs_perf
@pytest.mark.live
def test_tracepoint_probe_asks_perf_and_reports_its_reason():
    if os.geteuid() != 0:
        pytest.skip("as root perf can record the futex tracepoints")
    perf = env.find_tool("perf")
    assert env.perf_tracepoint_probe(perf) == {"usable": True, "error": None}
    assert env.perf_tracepoint_probe(perf) is env.perf_tracepoint_probe(perf)   # one probe per process
    missing = env.perf_tracepoint_probe(perf, ("syscalls:sys_enter_no_such_call",))
    assert missing["usable"] is False
    assert "sys_enter_no_such_call" in missing["error"] and "not found" in missing["error"]
    assert "\n" not in missing["error"]


def test_perf_error_line_takes_perfs_reason_not_its_usage():
    # `perf record -e syscalls:sys_enter_futex` as `nobody`, tracefs mounted by root (mode 700)
    with open(os.path.join(ROOT, "tests", "fixtures", "perf-tracefs-permission.stderr.txt")) as stream:
        stderr = stream.read()
    assert env.perf_error_line(stderr) == \
        "No permissions to read /sys/kernel/tracing/events/syscalls/sys_enter_futex"
    assert env.perf_error_line("Error:\nNo permission to enable syscalls:sys_enter_futex event.\n") == \
        "No permission to enable syscalls:sys_enter_futex event."


ORT_CHILD = "import onnxruntime, sys; print('ready', flush=True); sys.stdin.read()"


def start_ort_child(python):
    child = subprocess.Popen([python, "-c", ORT_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


@pytest.mark.parametrize("python, version", [(sys.executable, None), (OLD_ORT_PYTHON, "1.15.1")])
@pytest.mark.live
def test_native_module_of_a_process_with_ort_loaded(python, version):
    if not os.path.exists(python):
        pytest.fail(f"{python} missing: `make setup` creates it")
    child = start_ort_child(python)
    try:
        module = env.ort_native_module(child.pid)
        info = env.ort_module_info(module)
        environment = env.fingerprint(child.pid)
    finally:
        child.stdin.close()
        child.wait()
    assert re.search(r"onnxruntime/capi/onnxruntime_pybind11_state[^/]*\.so$", module)
    if version is None:
        import importlib.metadata
        version = importlib.metadata.version("onnxruntime")
        assert module == env.installed_ort_module()
    assert info["version"] == version and info["package"] == "onnxruntime"
    assert info["symbol_status"] == "stripped"      # the PyPI wheels are stripped
    assert re.fullmatch(r"[0-9a-f]{40}", info["build_id"])
    assert environment["ort"]["source"] == "loaded" and environment["ort"]["build_id"] == info["build_id"]
    assert environment["process"] == {"pid": child.pid, "exe": os.path.realpath(python)}


@pytest.mark.live
def test_native_module_is_none_without_ort_and_bad_pid_is_an_input_error():
    plain = subprocess.Popen([sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        plain.stdout.readline()
        assert env.ort_native_module(plain.pid) is None
    finally:
        plain.stdin.close()
        plain.wait()
    with pytest.raises(InputError, match="no process with pid"):
        env.ort_native_module(2 ** 22 + 1)


@pytest.mark.live
def test_fingerprint_of_this_machine_is_complete_and_serialisable():
    environment = env.fingerprint()
    json.dumps(environment)
    assert set(environment) >= {"kernel", "cpu", "perf", "perf_event_paranoid", "kptr_restrict",
                                "ptrace_scope", "container", "cgroup", "affinity", "ort", "python"}
    assert environment["kernel"]["release"] == os.uname().release
    assert environment["affinity"] == sorted(os.sched_getaffinity(0))
    assert environment["perf_event_paranoid"] == env.perf_event_paranoid()
    assert environment["cgroup"]["version"] in (1, 2)
    assert environment["ort"]["source"] == "installed"


@pytest.mark.live
def test_fingerprint_of_a_vanished_process_has_nulls_not_exceptions():
    gone = subprocess.Popen(["true"])
    gone.wait()
    environment = env.fingerprint(gone.pid)
    assert environment["ort"] is None
    assert environment["affinity"] is None
    assert environment["cgroup"]["cpu_limit"] is None and environment["cgroup"]["cpu_stat"] is None
    assert environment["process"] == {"pid": gone.pid, "exe": None}
    assert environment["cpu"]["logical_cores"] == os.cpu_count()   # machine facts still there


def test_install_command_names_the_distribution_package():
    release = env.os_release()
    command = env.perf_install_command()
    if release.get("ID") == "debian":
        assert command.endswith("apt-get install -y linux-perf")
    elif release.get("ID") == "ubuntu":
        assert f"linux-tools-{os.uname().release}" in command
    else:
        assert "perf" in command
