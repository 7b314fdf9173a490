"""What ortprof checks about a process before attaching to it, and why ptrace was refused.

Everything here reads /proc and ELF symbol tables: no process is stopped or started.
"""
import os
import pwd
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .. import environment as env
from ..errors import EnvironmentProblem, InputError
from ..sysfiles import read_text
from .gdb import MAIN_INTERPRETER, REQUIRED_SYMBOLS

ORT_MODULE = re.compile(r"onnxruntime_pybind11_state[^/]*\.so")
LIBPYTHON = re.compile(r"/libpython\d\.\d+[a-z]*\.so[.\d]*$")
CPYTHON_API = "PyEval_SaveThread"      # exported by an executable or libpython that embeds CPython


@dataclass
class Mapping:
    start: int
    end: int
    offset: int
    inode: int
    path: str


@dataclass
class Target:
    pid: int
    name: str
    uid: int
    ns_pid: int                       # its pid as it sees itself (its PID namespace's)
    tracer: int                       # TracerPid: another debugger holds it
    maps: List[str] = field(default_factory=list)   # file paths it maps, in the order of /proc/PID/maps
    mappings: List[Mapping] = field(default_factory=list)
    runtime: Optional[str] = None     # the file that exports the CPython API (the executable or a libpython)
    functions: Dict[str, int] = field(default_factory=dict)   # C API function -> its address in the process
    ort_module: Optional[str] = None  # onnxruntime's Python binding, when mapped
    problem: Optional[str] = None     # why the runtime's addresses cannot be trusted


def _status(pid):
    text = read_text(f"/proc/{pid}/status")
    if text is None:
        raise InputError(f"pid {pid}: no such process")
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def inspect(pid):
    """The Target, or InputError (no process) or EnvironmentProblem (its memory map is not
    readable: the ptrace check failed)."""
    if pid == os.getpid():
        raise InputError(f"pid {pid} is ortprof itself")
    status = _status(pid)
    if status.get("State", "").startswith("Z"):
        raise InputError(f"pid {pid}: the process has exited (a zombie)")
    target = Target(pid=pid, name=status.get("Name", "?"), uid=int(status.get("Uid", "0").split()[1]),
                    ns_pid=int(status.get("NSpid", str(pid)).split()[-1]), tracer=int(status.get("TracerPid", "0")))
    try:
        with open(f"/proc/{pid}/maps") as stream:
            lines = stream.read().splitlines()
    except FileNotFoundError:
        raise InputError(f"pid {pid}: no such process") from None
    except PermissionError:
        raise refusal(target, ptrace_obstacle(target) or "cannot read its memory map (/proc/PID/maps)") from None
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            low, high = parts[0].split("-")
            target.mappings.append(Mapping(int(low, 16), int(high, 16), int(parts[2], 16), int(parts[4]), parts[5]))
            if parts[5] not in target.maps:
                target.maps.append(parts[5])
    target.ort_module = next((path for path in target.maps if ORT_MODULE.search(path)), None)
    _find_cpython(target)
    return target


def _find_cpython(target):
    """The mapped file (the executable first, then a libpython) whose dynamic symbols define the
    CPython API, read through /proc/PID/root (the process's own mount namespace), and the
    addresses of the functions attach calls, checked against the code in the process's memory."""
    try:
        exe = os.readlink(f"/proc/{target.pid}/exe")
    except OSError:
        exe = None
    candidates = [path for path in target.maps if path == exe] + [path for path in target.maps if LIBPYTHON.search(path)]
    wanted = (*REQUIRED_SYMBOLS, *MAIN_INTERPRETER)
    for path in candidates:
        if path.endswith(" (deleted)"):
            target.problem = f"{path} was deleted since the process started (an upgrade?)"
            continue
        mapped = [m for m in target.mappings if m.path == path]
        functions, problem = _function_addresses(target.pid, path, mapped, wanted)
        if CPYTHON_API in functions:
            target.runtime, target.functions, target.problem = path, functions, problem
            return


def _function_addresses(pid, path, mapped, names):
    """({name: address in the process} for the `names` the ELF file defines, a problem or None).
    The file is the one mapped (same inode) and the first bytes of the functions in memory are
    the file's, else the addresses are not given."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        with open(f"/proc/{pid}/root{path}", "rb") as stream:
            if os.fstat(stream.fileno()).st_ino not in {m.inode for m in mapped}:
                return {}, f"{path} on disk is not the file the process mapped (replaced since it started?)"
            elf = ELFFile(stream)
            table = elf.get_section_by_name(".dynsym")
            if table is None:
                return {}, None
            loads = [segment for segment in elf.iter_segments() if segment["p_type"] == "PT_LOAD"]
            functions, code = {}, {}
            for name in names:
                symbol = next((found for found in table.get_symbol_by_name(name) or ()
                               if found["st_shndx"] != "SHN_UNDEF" and found["st_info"]["type"] == "STT_FUNC"), None)
                if symbol is None:
                    continue
                value = symbol["st_value"]
                segment = next((seg for seg in loads if seg["p_vaddr"] <= value < seg["p_vaddr"] + seg["p_filesz"]), None)
                if segment is None:
                    continue
                file_offset = value - segment["p_vaddr"] + segment["p_offset"]
                mapping = next((m for m in mapped if m.offset <= file_offset < m.offset + (m.end - m.start)), None)
                if mapping is None:
                    continue
                functions[name] = mapping.start + file_offset - mapping.offset
                stream.seek(file_offset)
                code[name] = stream.read(16)
    except (OSError, ELFError, ValueError) as exc:
        return {}, f"cannot read {path}: {exc}"
    problem = _code_differs(pid, functions, code)
    return (functions, None) if problem is None else ({}, problem)


def _code_differs(pid, functions, code):
    """None when the first bytes of each function in the process's memory are the file's."""
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
            for name, address in functions.items():
                memory.seek(address)
                if memory.read(len(code[name])) != code[name]:
                    return f"the code of {name} in memory differs from the file (patched, or another file)"
    except OSError as exc:
        return f"cannot read its memory (/proc/PID/mem: {exc.strerror or exc})"
    return None


def missing_functions(target):
    return [name for name in REQUIRED_SYMBOLS if name not in target.functions]


def require_attachable(target):
    """EnvironmentProblem when ptrace will surely be refused (another tracer, Yama, another user
    without CAP_SYS_PTRACE), InputError unless the process is a CPython with onnxruntime loaded,
    EnvironmentProblem when CPython's functions cannot be located in it."""
    if target.tracer:
        tracer_name = (read_text(f"/proc/{target.tracer}/comm") or "?").strip()
        raise EnvironmentProblem(f"pid {target.pid} is already traced by pid {target.tracer} ({tracer_name}): a "
                                 "process has one tracer at a time; detach that debugger (or strace) first")
    problem = ptrace_obstacle(target)
    if problem:
        raise refusal(target, problem)
    if target.problem and "/proc/PID/mem" in target.problem:
        raise refusal(target, target.problem)
    if target.runtime is None and target.problem is None:
        raise InputError(f"pid {target.pid} ({target.name}) is not a CPython process: neither its executable nor "
                         "a libpython it maps exports the CPython API")
    if target.runtime is None:
        raise EnvironmentProblem(f"pid {target.pid} ({target.name}): ortprof cannot locate CPython's functions in "
                                 f"it: {target.problem}. Restart it to attach, or start it with the startup hook")
    missing = missing_functions(target)
    if missing:
        raise EnvironmentProblem(f"pid {target.pid} ({target.name}): its CPython ({target.runtime}) does not export "
                                 f"{', '.join(missing)}, which attach calls (Python 2, or a build without them)")
    if target.ort_module is None:
        raise InputError(f"pid {target.pid} ({target.name}): onnxruntime is not loaded in it (the Python "
                         "package is not imported); nothing to attach to")


def _descends_from_us(pid):
    me = os.getpid()
    while pid > 1:
        status = read_text(f"/proc/{pid}/status") or ""
        match = re.search(r"^PPid:\s*(\d+)", status, re.M)
        if not match:
            return False
        pid = int(match.group(1))
        if pid == me:
            return True
    return False


def ptrace_obstacle(target):
    """Why the kernel will refuse ortprof's ptrace of `target` (Yama, another user), or None
    when nothing known stands in the way (a seccomp filter or an LSM can still refuse it)."""
    privileged = "CAP_SYS_PTRACE" in env.capabilities()
    scope = env.ptrace_scope()
    if scope == 3:
        return "kernel.yama.ptrace_scope=3: ptrace is disabled until reboot"
    if scope == 2 and not privileged:
        return "kernel.yama.ptrace_scope=2: only processes with CAP_SYS_PTRACE may attach"
    if scope == 1 and not privileged and not _descends_from_us(target.pid):
        return "kernel.yama.ptrace_scope=1: without CAP_SYS_PTRACE a process may only attach to its descendants"
    if target.uid != os.geteuid() and not privileged:
        return (f"it runs as {user_name(target.uid)} and ortprof as {user_name(os.geteuid())}: only a process "
                "with CAP_SYS_PTRACE (root) may attach to another user's process")
    return None


def refusal(target, detail):
    """The EnvironmentProblem for a refused ptrace of `target`: what refused it and the fix."""
    privileged = "CAP_SYS_PTRACE" in env.capabilities()
    scope = env.ptrace_scope()
    in_container = env.container_info()["in_container"]
    cap_fix = "run ortprof as root" + (" in a container started with `--cap-add SYS_PTRACE`" if in_container else "")
    if "ptrace_scope=3" in detail:
        fix = "set kernel.yama.ptrace_scope=1 (or 0) in /etc/sysctl.d/ and reboot"
    elif "ptrace_scope=1" in detail:
        fix = f"sudo sysctl -w kernel.yama.ptrace_scope=0, or {cap_fix}"
    elif "ptrace_scope=2" in detail or "another user" in detail:
        fix = cap_fix
    else:
        reasons = []
        if env.seccomp_mode() == 2:
            reasons.append("ortprof runs under a seccomp filter (a container's default profile refuses ptrace): "
                           "start it with `--cap-add SYS_PTRACE` or `--security-opt seccomp=unconfined`")
        if scope == 1 and not privileged:
            reasons.append(f"kernel.yama.ptrace_scope=1: sudo sysctl -w kernel.yama.ptrace_scope=0, or {cap_fix}")
        if target.uid != os.geteuid() and not privileged:
            reasons.append(f"it runs as {user_name(target.uid)}: {cap_fix}")
        if not reasons:
            reasons.append("an LSM (AppArmor, SELinux) or a non-dumpable process (prctl PR_SET_DUMPABLE 0, "
                           f"a setuid program): {cap_fix}, or allow ptrace in the LSM's profile")
        fix = "; ".join(reasons)
    return EnvironmentProblem(f"cannot attach to pid {target.pid} ({target.name}): ptrace refused: {detail}. Fix: {fix}")


def require_gdb(gdb=None):
    """gdb's path: `gdb` if given (it must exist), else the one on PATH."""
    found = gdb if gdb else env.find_tool("gdb")
    if not found or not os.access(found, os.X_OK):
        raise EnvironmentProblem(
            (f"gdb not found at {gdb}" if gdb else "gdb is not installed") +
            ": ortprof attaches through gdb (it runs ortprof's code in the process at a safe point). "
            "Fix: apt-get install gdb (Debian, Ubuntu), dnf install gdb (Fedora, RHEL), apk add gdb (Alpine)")
    return found
