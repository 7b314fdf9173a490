"""`ortprof doctor`: the real checks on this machine, and real failures forced by
taking perf off PATH, dropping privileges and installing seccomp filters."""
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import pytest

from ortprof import doctor, environment as env
from ortprof.builder.preflight import DISK_GIB
from ortprof.checks import failures
from ortprof.errors import EXIT_ENVIRONMENT, EnvironmentProblem, InputError

from nobody import SYSTEM_PYTHON, unprivileged_prefix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_perf = pytest.mark.skipif(env.find_tool("perf") is None, reason="perf is not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def ortprof(*args, env_vars=None, prefix=(), python=sys.executable, cwd=ROOT):
    """Run the CLI in a subprocess: (exit code, stdout, stderr)."""
    done = subprocess.run([*prefix, python, "-m", "ortprof", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env_vars)
    return done.returncode, done.stdout, done.stderr


def by_id(report):
    assert report["schema"] == "ortprof.doctor/1"
    for check in report["checks"]:
        assert set(check) == {"id", "status", "detail", "fix", "apt"}
        assert check["status"] in ("ok", "warning", "fail")
        assert "\n" not in check["detail"]
        assert check["status"] == "ok" or check["fix"], check
    return {check["id"]: check for check in report["checks"]}


@needs_perf
@needs_root
@pytest.mark.live
def test_full_doctor_on_this_machine_passes_with_real_recordings():
    code, out, err = ortprof("doctor", "--json")
    checks = by_id(json.loads(out))
    assert code == 0, err
    assert list(checks) == list(doctor.CHECKS)
    assert not [c for c in checks.values() if c["status"] == "fail"]
    assert "perf record --call-graph dwarf works" in checks["perf-dwarf"]["detail"]
    assert "recorded" in checks["futex-tracepoints"]["detail"] and "with call stacks" in checks["futex-tracepoints"]["detail"]
    if env.bpftrace_info() is not None:
        assert "futex calls of a child in the kernel" in checks["futex-bpf"]["detail"]
    assert "dumped a child Python's stack" in checks["py-spy"]["detail"]
    assert "imports, providers:" in checks["onnxruntime"]["detail"]
    assert "CPUExecutionProvider" in checks["onnxruntime"]["detail"]
    waitpkg = env.cpu_info()["flags_of_interest"]["waitpkg"]
    assert ("TPAUSE" if waitpkg else "no WAITPKG") in checks["cpu"]["detail"]


@pytest.mark.live
def test_terminal_output_is_a_table_with_fixes():
    expected = {c.id: c for c in doctor.run_checks(["cpu", "build-cmake", "build-disk"])}
    code, out, err = ortprof("doctor", "--quick", "--check", "cpu", "--check", "build-cmake", "--check", "build-disk")
    assert code == 0, err
    assert out.startswith("ortprof doctor")
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in out.splitlines() if line.startswith("│") and line.split("│")[1].strip()}
    assert rows == {name: check.status for name, check in expected.items()}
    for name, check in expected.items():
        assert (f"fix {name}:" in out) == (check.status != "ok")
    counts = [sum(c.status == s for c in expected.values()) for s in ("ok", "warning", "fail")]
    assert out.rstrip().endswith("{} ok, {} warning(s), {} failed".format(*counts))


@pytest.mark.live
def test_quick_record_subset_is_fast_and_never_records_a_workload():
    env.perf_tracepoint_probe.cache_clear()
    started = time.perf_counter()
    checks = doctor.run_checks(doctor.RECORD_CHECKS)
    elapsed = time.perf_counter() - started
    assert [c.id for c in checks] == [name for name in doctor.CHECKS if name in doctor.RECORD_CHECKS]
    # the one perf run is the futex probe of an empty child: ~0.4 s, more on a busy machine
    assert elapsed < 3, f"record's pre-flight checks took {elapsed:.2f} s"
    assert "works:" not in " ".join(c.detail for c in checks)   # no child workload was recorded
    started = time.perf_counter()
    doctor.run_checks(["futex-tracepoints"], thorough=False)
    assert time.perf_counter() - started < 0.2, "the futex probe runs once per process"


@pytest.mark.live
def test_unknown_check_is_an_input_error():
    with pytest.raises(InputError, match="unknown doctor check nope"):
        doctor.run_checks(["nope"])
    code, _, err = ortprof("doctor", "--check", "nope")
    assert code == 3 and err.strip().startswith("ortprof: error: unknown doctor check nope")


@pytest.mark.live
def test_perf_missing_from_path_fails_with_the_install_command(tmp_path):
    # An empty PATH: perf is gone; py-spy is still found next to the Python.
    code, out, err = ortprof("doctor", "--json", "--check", "perf", "--check", "perf-dwarf",
                             "--check", "py-spy", env_vars={"PATH": str(tmp_path), "HOME": str(tmp_path)})
    checks = by_id(json.loads(out))
    assert code == EXIT_ENVIRONMENT
    assert checks["perf"]["status"] == "fail"
    assert checks["perf"]["detail"] == "perf is not installed (not on PATH)"
    assert checks["perf"]["fix"] == env.perf_install_command()
    if env.os_release().get("ID") == "debian":
        assert checks["perf"]["fix"].endswith("apt-get install -y linux-perf")
    assert checks["perf-dwarf"]["status"] == "fail" and "not tested" in checks["perf-dwarf"]["detail"]
    assert checks["py-spy"]["status"] == "ok"
    assert err.strip() == "ortprof: error: 2 check(s) failed: perf, perf-dwarf"


# -- unprivileged ----------------------------------------------------------------------
@needs_perf
@pytest.mark.live
def test_unprivileged_user_gets_warnings_with_sysctl_fixes():
    prefix = unprivileged_prefix()
    code, out, err = ortprof("doctor", "--json", "--check", "perf-permission", "--check", "perf-dwarf",
                             "--check", "futex-tracepoints", "--check", "py-spy", "--check", "cgroup",
                             prefix=prefix, python=SYSTEM_PYTHON, cwd="/tmp")
    checks = by_id(json.loads(out))
    paranoid = env.perf_event_paranoid()
    if paranoid >= 2:
        assert checks["perf-permission"]["status"] == "warning"
        assert "user-space sampling only" in checks["perf-permission"]["detail"]
        assert "unprivileged" in checks["perf-permission"]["detail"]
        assert "sysctl -w kernel.perf_event_paranoid=1" in checks["perf-permission"]["fix"]
        # user-space dwarf sampling of one's own child still works, for real
        assert checks["perf-dwarf"]["status"] == "ok", checks["perf-dwarf"]
    if paranoid > -1:
        assert checks["futex-tracepoints"]["status"] == "warning"
        assert "futex waits will not be attributed" in checks["futex-tracepoints"]["detail"]
    assert checks["cgroup"]["status"] == "warning"
    assert "permission denied" in checks["cgroup"]["detail"]
    assert "run ortprof as root" in checks["cgroup"]["fix"]
    if env.ptrace_scope() in (None, 0):
        assert checks["py-spy"]["status"] == "ok", checks["py-spy"]
    assert code == 0, err     # warnings only


# -- seccomp: what container runtimes do ---------------------------------------------------
SYSCALLS_X86_64 = {"ptrace": 101, "perf_event_open": 298, "process_vm_readv": 310, "bpf": 321}

# Installs a classic-BPF seccomp filter that makes the listed system calls fail
# with EPERM (as Docker's default profile does), then executes the command.
SECCOMP_EXEC = r"""
import ctypes, os, struct, sys
blocked = [int(n) for n in sys.argv[1].split(",")]
LOAD, JUMP_IF_EQUAL, RETURN = 0x20, 0x15, 0x06
ALLOW, FAIL_EPERM, AUDIT_ARCH_X86_64 = 0x7FFF0000, 0x00050001, 0xC000003E
program = [(LOAD, 0, 0, 4), (JUMP_IF_EQUAL, 1, 0, AUDIT_ARCH_X86_64), (RETURN, 0, 0, ALLOW), (LOAD, 0, 0, 0)]
program += [(JUMP_IF_EQUAL, len(blocked) - i, 0, nr) for i, nr in enumerate(blocked)]
program += [(RETURN, 0, 0, ALLOW), (RETURN, 0, 0, FAIL_EPERM)]
code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
buffer = ctypes.create_string_buffer(code, len(code))
class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0                      # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(Program(len(program), ctypes.addressof(buffer))), 0, 0) == 0
os.execv(sys.argv[2], sys.argv[2:])
"""


def seccomp_prefix(*names):
    if platform.machine() != "x86_64":
        pytest.skip("the seccomp helper knows x86-64 system call numbers only")
    numbers = ",".join(str(SYSCALLS_X86_64[name]) for name in names)
    return [sys.executable, "-c", SECCOMP_EXEC, numbers]


@pytest.mark.live
def test_seccomp_blocking_perf_event_open_fails_with_the_container_fix():
    code, out, err = ortprof("doctor", "--json", "--check", "perf-permission", "--check", "perf-dwarf",
                             prefix=seccomp_prefix("perf_event_open"))
    checks = by_id(json.loads(out))
    assert code == EXIT_ENVIRONMENT
    assert checks["perf-permission"]["status"] == "fail"
    assert "blocked by a seccomp filter (EPERM)" in checks["perf-permission"]["detail"]
    assert "--cap-add PERFMON" in checks["perf-permission"]["fix"]
    assert "seccomp=unconfined" in checks["perf-permission"]["fix"]
    assert checks["perf-dwarf"]["status"] == "fail"


@needs_perf
@pytest.mark.live
def test_the_probe_agrees_with_perf_itself_under_that_filter(tmp_path):
    done = subprocess.run([*seccomp_prefix("perf_event_open"), env.find_tool("perf"), "record", "-q",
                           "-o", str(tmp_path / "perf.data"), "--", "true"], capture_output=True, text=True)
    assert done.returncode != 0 and "not permitted" in done.stderr.lower()


@pytest.mark.live
def test_record_preflight_refuses_with_one_line_under_seccomp():
    script = ("from ortprof.doctor import require_perf\n"
              "from ortprof.errors import OrtprofError\n"
              "try:\n"
              "    require_perf()\n"
              "except OrtprofError as exc:\n"
              "    print(exc.exit_code, exc)\n")
    done = subprocess.run([*seccomp_prefix("perf_event_open"), sys.executable, "-c", script],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    line = done.stdout.strip()
    assert line.startswith("4 perf_event_open is blocked by a seccomp filter"), (line, done.stderr)
    assert "; fix: start the container with `--cap-add PERFMON`" in line
    assert "\n" not in line


@pytest.mark.live
def test_seccomp_blocking_process_vm_readv_fails_py_spy_and_py_spy_really_fails():
    prefix = seccomp_prefix("process_vm_readv", "ptrace")
    code, out, err = ortprof("doctor", "--json", "--check", "py-spy", prefix=prefix)
    check = by_id(json.loads(out))["py-spy"]
    assert code == EXIT_ENVIRONMENT
    assert check["status"] == "fail" and "process_vm_readv is refused (EPERM)" in check["detail"]
    assert "--cap-add SYS_PTRACE" in check["fix"]
    # and py-spy under the same filter does fail for real
    child = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()
        done = subprocess.run([*prefix, env.find_tool("py-spy"), "dump", "--pid", str(child.pid)],
                              capture_output=True, text=True, timeout=30)
    finally:
        child.kill()
        child.wait()
    assert done.returncode != 0


@pytest.mark.live
def test_require_returns_the_checks_when_nothing_fails():
    if failures(doctor.run_checks(["perf", "perf-permission"])):
        pytest.skip("perf is not usable on this machine")
    checks = doctor.require(["perf", "perf-permission"])
    assert [c.id for c in checks] == ["perf", "perf-permission"]


def test_require_raises_the_first_failure_with_its_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(EnvironmentProblem) as caught:
        doctor.require(["perf", "perf-dwarf"])
    assert str(caught.value) == f"perf is not installed (not on PATH); fix: {env.perf_install_command()}"
    assert caught.value.exit_code == EXIT_ENVIRONMENT


def test_stack_parser_counts_samples_and_frames():
    fixture = os.path.join(ROOT, "tests", "fixtures", "stripped-1.31.1-matmul.perf-script.txt")
    with open(fixture) as stream:
        text = stream.read()
    stacks = doctor._stacks(text)
    headers = [line for line in text.splitlines() if line.strip() and not line[:1].isspace()]
    assert len(stacks) == len(headers) > 0
    assert sum(map(len, stacks)) == sum(1 for line in text.splitlines() if line[:1] in (" ", "\t") and line.strip())


# -- futex tracepoints: perf's own reasons, turned into fixes ---------------------------
def fixture_text(name):
    with open(os.path.join(ROOT, "tests", "fixtures", name)) as stream:
        return stream.read()


def facts_with(**known):
    facts = doctor.Facts()
    facts.__dict__.update(known)   # the cached facts, as another machine would have them
    return facts


NOT_IN_CONTAINER = {"in_container": False, "kind": None}


def test_futex_refusals_from_perfs_own_messages():
    # captured from `perf record -e syscalls:sys_enter_futex` as `nobody` on this machine
    no_tracefs = env.perf_error_line(fixture_text("perf-no-tracefs.stderr.txt"))
    root_only = env.perf_error_line(fixture_text("perf-tracefs-permission.stderr.txt"))
    assert no_tracefs == "Unable to find debugfs/tracefs"

    detail, fix = doctor.futex_refusal(no_tracefs, facts_with(root=False, container=NOT_IN_CONTAINER))
    assert detail.startswith("tracefs is not mounted and perf may mount it only as root")
    assert "run ortprof as root" in fix and "mount -t tracefs nodev /sys/kernel/tracing" in fix

    detail, fix = doctor.futex_refusal(no_tracefs, facts_with(root=True, container={"in_container": True}))
    assert detail.startswith("no tracefs in this container")
    assert "-v /sys/kernel/tracing:/sys/kernel/tracing" in fix

    detail, fix = doctor.futex_refusal(root_only, facts_with(root=False, container=NOT_IN_CONTAINER))
    assert "readable by root only" in detail and "remount,mode=755" in fix

    detail, fix = doctor.futex_refusal("File /sys/kernel/tracing/events/syscalls/sys_enter_futex not found.",
                                       facts_with(root=True, container=NOT_IN_CONTAINER))
    assert "CONFIG_FTRACE_SYSCALLS" in detail and "CONFIG_FTRACE_SYSCALLS" in fix


@needs_perf
@needs_root
@pytest.mark.live
def test_futex_check_and_probe_agree_as_root():
    check, = doctor.run_checks(["futex-tracepoints"], thorough=False)
    assert check.status == "ok", check
    assert env.perf_tracepoint_probe(env.find_tool("perf"))["usable"] is True


def test_build_disk_uses_builds_own_threshold(tmp_path):
    check = doctor.check_build_disk(doctor.Facts(), False, build_root=str(tmp_path / "build"))
    free_gib = shutil.disk_usage(tmp_path).free / (1 << 30)
    assert check.status == ("ok" if free_gib >= DISK_GIB["Debug"] else "warning")
    assert f"a Debug build needs about {DISK_GIB['Debug']} GiB" in check.detail


# -- futex counting in BPF ---------------------------------------------------------------
needs_bpftrace = pytest.mark.skipif(env.bpftrace_info() is None, reason="bpftrace is not installed")


@pytest.mark.live
def test_futex_bpf_without_bpftrace_warns_with_the_install_command():
    code, out, err = ortprof("doctor", "--json", "--check", "futex-bpf",
                             env_vars={**os.environ, "ORTPROF_BPFTRACE": "", "ORTPROF_BPF_LOADER": ""})
    check = by_id(json.loads(out))["futex-bpf"]
    assert code == 0, err    # a warning: record falls back to perf's per-call tracepoints
    assert check["status"] == "warning"
    assert check["detail"].startswith("bpftrace is not installed: futex calls are traced one by one by perf")
    assert check["fix"] == doctor.bpftrace_install_command() and check["apt"] == ["bpftrace"]
    if env.os_release().get("ID") == "debian":
        assert check["fix"].endswith("apt-get install -y bpftrace")


@needs_root
@needs_bpftrace
@pytest.mark.live
def test_futex_bpf_counts_a_childs_futex_calls_in_the_kernel():
    (check,) = doctor.run_checks(["futex-bpf"], thorough=True)
    assert check.status == "ok", check
    calls = int(check.detail.split("counted ")[1].split()[0])
    assert calls >= 40    # 20 thread hand-offs, each a wait and a wake at least


@needs_bpftrace
@pytest.mark.live
def test_futex_bpf_unprivileged_says_root_only():
    prefix = unprivileged_prefix()
    code, out, err = ortprof("doctor", "--json", "--check", "futex-bpf", prefix=prefix, python=SYSTEM_PYTHON,
                             cwd="/tmp")
    check = by_id(json.loads(out))["futex-bpf"]
    assert check["status"] == "warning" and check["detail"].startswith("bpftrace runs as root only")
    assert check["fix"] == "run ortprof as root, or record with --futex-method perf"


@needs_root
@needs_bpftrace
@pytest.mark.live
def test_futex_bpf_under_a_seccomp_filter_on_bpf_reports_bpftraces_own_error():
    code, out, err = ortprof("doctor", "--json", "--check", "futex-bpf", prefix=seccomp_prefix("bpf"))
    check = by_id(json.loads(out))["futex-bpf"]
    assert code == 0, err
    assert check["status"] == "warning"
    # the compiled program, where built, is tried first and fails the same way
    assert "bpftrace exited with code " in check["detail"] and "ERROR" in check["detail"]
    from ortprof.signals.sched.compiled import loader_path
    if loader_path()[0]:
        assert check["detail"].startswith("the compiled BPF program does not run (")
    assert "seccomp filter" in check["fix"] and "--futex-method perf" in check["fix"]


def test_attach_check_names_gdb_and_the_ptrace_policy(monkeypatch):
    """`record --pid` of a Python service attaches through gdb: without it, or where Yama refuses
    ptrace of a process ortprof did not start, a warning that says what the record loses."""
    facts = None     # only _ptrace_refusal reads the machine's facts, and it is replaced below
    monkeypatch.setattr(env, "find_tool", lambda name: None if name == "gdb" else shutil.which(name))
    monkeypatch.setattr(doctor, "_ptrace_refusal", lambda facts: None)
    check = doctor.check_attach(facts, thorough=False)
    assert check.status == doctor.WARNING and "gdb is not installed" in check.detail and check.apt == ("gdb",)
    monkeypatch.setattr(env, "find_tool", lambda name: "/usr/bin/gdb")
    monkeypatch.setattr(doctor, "_ptrace_refusal", lambda facts: ("kernel.yama.ptrace_scope=1: py-spy may only "
                                                                  "attach to its own descendants", "sudo sysctl ..."))
    check = doctor.check_attach(facts, thorough=False)
    assert check.status == doctor.WARNING and "gdb may only attach" in check.detail and "record --pid" in check.detail
    monkeypatch.setattr(doctor, "_ptrace_refusal", lambda facts: None)
    assert doctor.check_attach(facts, thorough=False).status == doctor.OK
