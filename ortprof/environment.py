"""Facts about the machine and a process that explain profiling results or
decide whether profiling can work: kernel settings, CPU, perf, container,
cgroup limits, and the ONNX Runtime native module a process has loaded.

Everything here is cheap (file reads, `perf --version`, probing system calls,
and one perf recording of an empty child for the futex tracepoints, cached per
process) so `ortprof record` can call it before every run. The verdicts and
fixes built on these facts live in ortprof.doctor, which imports this module;
this module imports nothing of doctor's.
"""
import ctypes
import errno
import functools
import glob
import importlib.util
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile

from . import cgroup
from .errors import EnvironmentProblem, InputError, OrtprofError
from .sysfiles import read_int, read_text

ORT_PYBIND_GLOB = "onnxruntime_pybind11_state*.so"
_ORT_PYBIND = re.compile(r"onnxruntime_pybind11_state[^/]*\.so$")
_ORT_SHARED_LIB = re.compile(r"libonnxruntime\.so[.\d]*$")

# CPU flags that change how ORT behaves: WAITPKG switches SpinPause from PAUSE
# to TPAUSE; the vector extensions pick MLAS kernels; hypervisor means a VM
# (usually no hardware PMU, so perf falls back to cpu-clock).
CPU_FLAGS_OF_INTEREST = ("waitpkg", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni",
                         "avx512_bf16", "amx_tile", "hypervisor")

# Capability bits (linux/capability.h) that decide what perf and py-spy may do.
CAPABILITIES = {"CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_SYSLOG": 34, "CAP_PERFMON": 38}


# -- tools ---------------------------------------------------------------------
def find_tool(name):
    """Path of an executable: PATH first, then the directory of this Python
    (py-spy and pip-installed cmake live in the venv's bin, often not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    return None


def tool_version(path, args=("--version",), timeout=10):
    """(first output line, None) or (None, error line) for `path --version`."""
    try:
        done = subprocess.run([path, *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    output = (done.stdout or done.stderr).strip()
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return None, lines[-1] if lines else f"exit code {done.returncode}"
    return (output.splitlines()[0] if output else ""), None


def perf_info():
    """{path, version, error} of the perf on PATH, or None when there is none.
    version is None (and error says why) when the binary does not run, e.g.
    Ubuntu's wrapper without linux-tools for the running kernel."""
    path = find_tool("perf")
    if path is None:
        return None
    line, error = tool_version(path)
    version = None
    if line:
        match = re.search(r"(\d+(?:\.\d+)+)", line)
        version = match.group(1) if match else line
    return {"path": path, "version": version, "error": error}


def bpftrace_info():
    """{path, version, error} of the bpftrace ortprof would run, or None when there
    is none. $ORTPROF_BPFTRACE, when set, names it (empty or not executable: none;
    this is how a machine without bpftrace is simulated)."""
    forced = os.environ.get("ORTPROF_BPFTRACE")
    if forced is not None:
        path = forced if forced and os.path.isfile(forced) and os.access(forced, os.X_OK) else None
    else:
        path = find_tool("bpftrace")
    if path is None:
        return None
    line, error = tool_version(path)
    match = re.search(r"(\d+(?:\.\d+)+)", line or "")
    return {"path": path, "version": match.group(1) if match else line, "error": error}


TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def tracepoint_format(event):
    """Path of a tracepoint's format file ("syscalls:sys_enter_futex") under a mounted tracefs, or None."""
    group, _, name = event.partition(":")
    for root in TRACEFS_ROOTS:
        path = os.path.join(root, "events", group, name, "format")
        if os.path.exists(path):
            return path
    return None


def os_release():
    """Fields of /etc/os-release (ID, ID_LIKE, PRETTY_NAME, ...)."""
    fields = {}
    for line in (read_text("/etc/os-release") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    return fields


# os-release ID -> (package family, install command)
_PACKAGE_MANAGERS = {
    "debian": ("debian", "apt-get install -y"), "ubuntu": ("ubuntu", "apt-get install -y"),
    "fedora": ("fedora", "dnf install -y"), "rhel": ("fedora", "dnf install -y"),
    "centos": ("fedora", "dnf install -y"), "arch": ("arch", "pacman -S --noconfirm"),
    "alpine": ("alpine", "apk add"), "suse": ("suse", "zypper install -y"),
    "opensuse": ("suse", "zypper install -y"),
}


def install_command(packages):
    """The command that installs a package on this distribution.

    `packages` maps a package family ("debian", "ubuntu", "fedora", "arch",
    "alpine", "suse") to package name(s); Ubuntu falls back to the Debian
    names, unknown distributions get the Debian command."""
    release = os_release()
    sudo = "" if os.geteuid() == 0 else "sudo "
    for distro in [release.get("ID", "")] + release.get("ID_LIKE", "").split():
        if distro in _PACKAGE_MANAGERS:
            family, command = _PACKAGE_MANAGERS[distro]
            name = packages.get(family) or (packages.get("debian") if family == "ubuntu" else None)
            if name:
                return f"{sudo}{command} {name}"
    if "debian" in packages:
        return f"{sudo}apt-get install -y {packages['debian']}"
    return f"install {next(iter(packages.values()))} with your package manager"


def perf_install_command():
    return install_command({
        "debian": "linux-perf",
        "ubuntu": f"linux-tools-{platform.release()} linux-tools-common",
        "fedora": "perf", "arch": "perf", "alpine": "perf", "suse": "perf"})


# -- kernel settings and privileges ---------------------------------------------
def perf_event_paranoid():
    return read_int("/proc/sys/kernel/perf_event_paranoid")


def kptr_restrict():
    return read_int("/proc/sys/kernel/kptr_restrict")


def ptrace_scope():
    """Yama's ptrace scope, or None when Yama is not in the kernel (no restriction)."""
    return read_int("/proc/sys/kernel/yama/ptrace_scope")


def _status_field(name, pid="self"):
    for line in (read_text(f"/proc/{pid}/status") or "").splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None


def seccomp_mode(pid="self"):
    """0 = none, 1 = strict, 2 = filter (what container runtimes install); None if unknown."""
    value = _status_field("Seccomp", pid)
    return int(value) if value is not None and value.isdigit() else None


def capabilities(pid="self"):
    """The effective capabilities among CAPABILITIES that the process holds."""
    value = _status_field("CapEff", pid)
    if value is None:
        return set()
    mask = int(value, 16)
    return {name for name, bit in CAPABILITIES.items() if mask >> bit & 1}


def is_root():
    return os.geteuid() == 0


# -- probing system calls ----------------------------------------------------------
# perf_event_open and process_vm_readv are called directly: it takes microseconds,
# and it hits exactly the kernel and seccomp checks that perf and py-spy will hit.
_SYSCALL_NUMBERS = {  # machine -> (perf_event_open, process_vm_readv)
    "x86_64": (298, 310), "aarch64": (241, 270), "riscv64": (241, 270), "ppc64le": (319, 351),
}
PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_CPU_CLOCK = 0
_SAMPLE_IP, _SAMPLE_TID, _SAMPLE_TIME, _SAMPLE_CALLCHAIN = 1 << 0, 1 << 1, 1 << 2, 1 << 5
_SAMPLE_REGS_USER, _SAMPLE_STACK_USER = 1 << 12, 1 << 13
_FLAG_DISABLED, _FLAG_EXCLUDE_KERNEL, _FLAG_EXCLUDE_HV = 1 << 0, 1 << 5, 1 << 6
_PERF_FLAG_FD_CLOEXEC = 1 << 3
# A few user registers (frame/stack pointer, instruction pointer) per machine; any
# non-empty valid mask makes the kernel validate register sampling.
_USER_REGS = {"x86_64": (1 << 6) | (1 << 7) | (1 << 8), "aarch64": (1 << 29) | (1 << 31) | (1 << 32)}
_ATTR_SIZE = 96  # PERF_ATTR_SIZE_VER3: up to sample_stack_user and clockid

_libc = None


def _syscall(number, *args):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    result = _libc.syscall(ctypes.c_long(number), *args)
    return result, (ctypes.get_errno() if result < 0 else 0)


def probe_perf_event_open(kernel=False, user_stacks=False):
    """Try to open a (disabled) sampling event on this process, the way perf
    would on a child. Returns 0 when permitted, the errno when refused, or None
    when the probe is not available on this machine (unknown syscall number or
    big-endian layout)."""
    machine = platform.machine()
    if machine not in _SYSCALL_NUMBERS or sys.byteorder != "little":
        return None
    if user_stacks and machine not in _USER_REGS:
        return None
    flags = _FLAG_DISABLED | _FLAG_EXCLUDE_HV | (0 if kernel else _FLAG_EXCLUDE_KERNEL)
    sample_type = _SAMPLE_IP | _SAMPLE_TID | _SAMPLE_TIME
    regs, stack = 0, 0
    if user_stacks:
        sample_type |= _SAMPLE_CALLCHAIN | _SAMPLE_REGS_USER | _SAMPLE_STACK_USER
        regs, stack = _USER_REGS[machine], 8192
    attr = struct.pack("=IIQQQQQIIQQQQIi", PERF_TYPE_SOFTWARE, _ATTR_SIZE, PERF_COUNT_SW_CPU_CLOCK, 1_000_000,
                       sample_type, 0,
                       flags, 0, 0, 0, 0, 0, regs, stack, 0)
    buffer = ctypes.create_string_buffer(attr, _ATTR_SIZE)
    fd, err = _syscall(_SYSCALL_NUMBERS[machine][0], buffer, ctypes.c_int(0), ctypes.c_int(-1),
                       ctypes.c_int(-1), ctypes.c_ulong(_PERF_FLAG_FD_CLOEXEC))
    if fd >= 0:
        os.close(fd)
        return 0
    return err


def probe_process_vm_readv():
    """Read 8 bytes of our own memory with process_vm_readv, the call py-spy uses.
    Only a seccomp filter can refuse this; returns 0, the errno, or None."""
    machine = platform.machine()
    if machine not in _SYSCALL_NUMBERS:
        return None

    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    source = ctypes.create_string_buffer(b"ortprof!", 8)
    target = ctypes.create_string_buffer(8)
    local, remote = IoVec(ctypes.addressof(target), 8), IoVec(ctypes.addressof(source), 8)
    count, err = _syscall(_SYSCALL_NUMBERS[machine][1], ctypes.c_int(os.getpid()),
                          ctypes.byref(local), ctypes.c_ulong(1), ctypes.byref(remote),
                          ctypes.c_ulong(1), ctypes.c_ulong(0))
    if count == 8 and target.raw == source.raw:
        return 0
    return err or errno.EIO


FUTEX_TRACEPOINTS = ("syscalls:sys_enter_futex", "syscalls:sys_exit_futex")
TRACEPOINT_PROBE_TIMEOUT = 30   # perf starts in ~0.4 s; a loaded 2-core machine takes longer


@functools.lru_cache(maxsize=None)
def perf_tracepoint_probe(perf, events=FUTEX_TRACEPOINTS):
    """Ask perf itself whether it can record `events`: `perf record` of an empty
    child, in a temporary directory. Returns {"usable": bool, "error": str|None}
    (error: perf's own one-line complaint).

    Reading /sys/kernel/tracing ourselves would answer wrongly on a freshly
    booted machine: tracefs is not mounted there, yet perf, when root, mounts it
    by itself. Cached per process (perf path, events): record and doctor share
    one answer."""
    with tempfile.TemporaryDirectory(prefix="ortprof-probe-") as tmp:
        # --no-bpf-event: no side-band thread, whose 1 s poll would dominate the probe.
        command = [perf, "record", "-q", "--no-bpf-event", "--no-buildid",
                   *(arg for event in events for arg in ("-e", event)),
                   "-o", os.path.join(tmp, "probe.data"), "--", sys.executable, "-c", ""]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TRACEPOINT_PROBE_TIMEOUT,
                                  cwd=tmp)
        except subprocess.TimeoutExpired:
            return {"usable": False, "error": f"perf record did not finish within {TRACEPOINT_PROBE_TIMEOUT} s"}
        except OSError as exc:
            return {"usable": False, "error": f"{perf} does not run: {exc}"}
    if done.returncode == 0:
        return {"usable": True, "error": None}
    return {"usable": False, "error": perf_error_line(done.stderr) or f"perf exited with code {done.returncode}"}


def perf_error_line(stderr):
    """perf's own reason from its stderr: the text of its `Error:` line (or the
    line after a bare `Error:`), else the last line that is not usage help."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("Error:"):
            text = line[len("Error:"):].strip()
            if text:
                return text
            if index + 1 < len(lines):
                return lines[index + 1]
    useful = [line for line in lines if not line.startswith(("Usage:", "or:", "-", "Run 'perf list'"))]
    return useful[-1] if useful else ""


# -- CPU, container --------------------------------------------------------------
def cpu_info():
    """{model, logical_cores, physical_cores, flags_of_interest}."""
    text = read_text("/proc/cpuinfo") or ""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if model is None and key in ("model name", "Model", "cpu model", "uarch"):
            model = value.strip()
        elif not flags and key in ("flags", "Features"):
            flags = set(value.split())
    logical, physical = os.cpu_count(), None
    try:
        import psutil
        logical = psutil.cpu_count() or logical
        physical = psutil.cpu_count(logical=False)
    except Exception:   # noqa: BLE001 - psutil cannot read topology in some sandboxes
        pass
    return {"model": model or platform.processor() or None, "architecture": platform.machine(),
            "logical_cores": logical, "physical_cores": physical,
            "flags_of_interest": {flag: flag in flags for flag in CPU_FLAGS_OF_INTEREST}}


_CONTAINER_CGROUP_MARKERS = (("kubepods", "kubernetes"), ("libpod", "podman"), ("docker", "docker"),
                             ("containerd", "containerd"), ("lxc", "lxc"), ("crio", "cri-o"))


def _root_filesystem():
    """(fstype, source) of the mount at "/" as this process sees it."""
    found = (None, None)
    for line in (read_text("/proc/self/mountinfo") or "").splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if sep and len(fields) > 4 and fields[4] == "/" and len(tail) >= 2:
            found = (tail[0], tail[1])   # the last mount on "/" wins
    return found


def container_info():
    """{in_container, kind, evidence, seccomp, capabilities, virtual_machine}.

    Strong signs decide: runtime marker files, container names in cgroup paths,
    Kubernetes variables, `container=` in PID 1's environment. /.dockerenv alone
    counts only when "/" is an overlay: VMs built from container images keep it."""
    evidence, kind = [], None

    def found(what, runtime):
        nonlocal kind
        evidence.append(what)
        kind = kind or runtime

    if os.path.exists("/run/.containerenv"):
        found("/run/.containerenv exists", "podman")
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        found("KUBERNETES_SERVICE_HOST is set", "kubernetes")
    for pid in ("self", "1"):
        text = read_text(f"/proc/{pid}/cgroup") or ""
        for marker, runtime in _CONTAINER_CGROUP_MARKERS:
            if re.search(rf"[/:.-]{marker}[/.-]", text):
                found(f"/proc/{pid}/cgroup mentions {marker}", runtime)
                break
    pid1_env = _read_bytes("/proc/1/environ")
    if pid1_env:
        for entry in pid1_env.split(b"\0"):
            if entry.startswith(b"container="):
                found(f"PID 1 has {entry.decode(errors='replace')}",
                      entry.split(b"=", 1)[1].decode(errors="replace") or "unknown")
    fstype, source = _root_filesystem()
    if os.path.exists("/.dockerenv"):
        if fstype == "overlay" or kind is not None:
            found("/.dockerenv exists", "docker")
        else:
            evidence.append(f"/.dockerenv exists, but / is {fstype} on {source} rather than an overlay: "
                            "a VM or host built from a container image")
    flags = cpu_info()["flags_of_interest"]
    return {"in_container": kind is not None, "kind": kind, "evidence": evidence,
            "root_filesystem": fstype, "seccomp": seccomp_mode(),
            "capabilities": sorted(capabilities()), "virtual_machine": flags.get("hypervisor", False)}


# -- ONNX Runtime -----------------------------------------------------------------
def ort_native_module(pid):
    """Path of the ORT native module a process has mapped: the Python binding
    (onnxruntime_pybind11_state*.so, ORT linked statically into it), else a
    libonnxruntime.so (C/C++ API users). None when ORT is not loaded.
    Raises InputError for a pid that does not exist, EnvironmentProblem when
    its maps are not readable."""
    try:
        with open(f"/proc/{int(pid)}/maps") as stream:
            maps = stream.read()
    except FileNotFoundError:
        raise InputError(f"no process with pid {pid}")
    except PermissionError:
        raise EnvironmentProblem(
            f"cannot read /proc/{pid}/maps (process of another user); run ortprof as that user or as root")
    shared_lib = None
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        path = parts[5].strip()
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        if _ORT_PYBIND.search(path):
            return _visible_path(pid, path)
        if shared_lib is None and _ORT_SHARED_LIB.search(path):
            shared_lib = _visible_path(pid, path)
    return shared_lib


def _visible_path(pid, path):
    # A process in another mount namespace (container) maps files we see under /proc/PID/root.
    if os.path.exists(path):
        return path
    inside = f"/proc/{pid}/root{path}"
    return inside if os.path.exists(inside) else path


def ort_version_of_module(path):
    """(distribution name, version) of the onnxruntime package a native module belongs to,
    read from the package's files without importing it; (None, None) if unknown."""
    package = os.path.dirname(os.path.dirname(path))   # .../onnxruntime/capi/x.so -> .../onnxruntime
    info = read_text(os.path.join(package, "capi", "build_and_package_info.py")) or ""
    name = _python_string(info, "package_name")
    version = _python_string(info, "__version__") or _python_string(
        read_text(os.path.join(package, "__init__.py")) or "", "__version__")
    if version is None and os.path.basename(path).startswith("libonnxruntime.so"):
        version = _c_api_library_version(path)
    if name is None and version is not None:
        # older wheels lack build_and_package_info.py: the dist-info names the package
        pattern = os.path.join(os.path.dirname(package), f"onnxruntime*-{version}.dist-info", "METADATA")
        for metadata in sorted(glob.glob(pattern)):
            match = re.search(r"^Name:\s*(\S+)", read_text(metadata) or "", re.MULTILINE)
            if match:
                name = match.group(1)
                break
    return name, version


def _c_api_library_version(path):
    """A libonnxruntime.so's version: the string its GetVersionString returns, read from the file
    (the name's suffix is often only the soname's major, "libonnxruntime.so.1")."""
    from .symbols.ortapi import read_ort_api
    try:
        return read_ort_api(path).ort_version
    except (InputError, OSError):
        suffix = os.path.basename(path)[len("libonnxruntime.so."):]
        return suffix if suffix.count(".") >= 2 else None


def ort_module_info(path):
    """{path, version, package, build_id, symbol_status, debuglink, has_eh_frame, size_bytes}."""
    from .symbols.elfinfo import read_elf_info
    info = read_elf_info(path).to_json()
    info["package"], info["version"] = ort_version_of_module(path)
    try:
        info["size_bytes"] = os.path.getsize(path)
    except OSError:
        info["size_bytes"] = None
    return info


def installed_ort_module():
    """Native module of the onnxruntime importable by this Python (found
    without importing onnxruntime), or None."""
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(location, "capi", ORT_PYBIND_GLOB)))
        if found:
            return found[0]
    return None


# -- the fingerprint ------------------------------------------------------------------
def fingerprint(pid=None):
    """Everything about the machine (and process `pid`) that explains a profile,
    for run.json's "environment". Never raises for something unreadable: that
    field becomes null."""
    target = "self" if pid is None else int(pid)
    result = {
        "kernel": _safe(lambda: {"release": platform.release(), "version": platform.version(),
                                 "machine": platform.machine()}),
        "os": _safe(lambda: os_release().get("PRETTY_NAME")),
        "cpu": _safe(cpu_info),
        "perf": _safe(perf_info),
        "perf_event_paranoid": _safe(perf_event_paranoid),
        "kptr_restrict": _safe(kptr_restrict),
        "ptrace_scope": _safe(ptrace_scope),
        "container": _safe(container_info),
        "cgroup": _safe(lambda: {"version": cgroup.cgroup_version(), "layout": cgroup.cgroup_layout(),
                                 "cpu_limit": cgroup.process_cpu_limit(pid),
                                 "cpu_stat": cgroup.cpu_stat(pid)}),
        "affinity": _safe(lambda: sorted(os.sched_getaffinity(0 if pid is None else int(pid)))),
        "python": {"executable": sys.executable, "version": platform.python_version(),
                   "implementation": platform.python_implementation()},
        "ort": _safe(lambda: _ort_fingerprint(pid)),
    }
    if pid is not None:
        result["process"] = {"pid": int(pid), "exe": _safe(lambda: os.readlink(f"/proc/{target}/exe"))}
    return result


def _ort_fingerprint(pid):
    if pid is None:
        module, source = installed_ort_module(), "installed"
    else:
        module, source = ort_native_module(pid), "loaded"
    if module is None:
        return None
    info = ort_module_info(module)
    info["source"] = source   # "loaded": mapped by the process; "installed": what this Python would import
    return info


# -- helpers ---------------------------------------------------------------------------
def _safe(compute):
    try:
        return compute()
    except (OSError, ValueError, OrtprofError, subprocess.SubprocessError):
        return None


def _python_string(source, name):
    match = re.search(rf"^{name}\s*=\s*['\"]([^'\"]+)['\"]", source, re.MULTILINE)
    return match.group(1) if match else None




def _read_bytes(path):
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError:
        return None


