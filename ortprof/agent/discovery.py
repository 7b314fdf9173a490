"""Processes with ORT's native module mapped, on the host or in containers.

A process is an ORT process when /proc/PID/maps has onnxruntime_pybind11_state*.so
or libonnxruntime*.so (environment.ort_native_module). Its container and Kubernetes
pod come from /proc/PID/cgroup; its pid inside its own PID namespace from the NSpid
line of /proc/PID/status (the startup hook names its file by that pid). Files of a
process in another mount namespace are read through /proc/PID/root.
"""
import os
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Optional

import psutil

from ..environment import ort_native_module, ort_version_of_module
from ..errors import OrtprofError
from ..recording.recorder import default_run_name
from ..sysfiles import read_text

_CONTAINER_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")
# kubepods/burstable/pod<uid>/... (cgroupfs) or kubepods-burstable-pod<uid with _>.slice (systemd)
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
SHORT_ID = 12    # container ids as `docker ps` shows them


@dataclass
class Target:
    pid: int
    started: float                      # psutil create_time: a reused pid is another process
    cmdline: list
    ort_module: str
    service: str
    ort_version: Optional[str] = None
    container: Optional[str] = None     # short container id, None on the host
    pod: Optional[str] = None           # Kubernetes pod uid
    ns_pid: Optional[int] = None        # pid inside the process's own PID namespace
    hook_dir: Optional[str] = None      # ORTPROF_HOOK_DIR as the agent sees it
    extra: dict = field(default_factory=dict)

    @property
    def key(self):
        return (self.pid, self.started)

    def labels(self, host):
        """Labels of this process for Pyroscope and Prometheus ("" when unknown)."""
        return {"service_name": self.service, "host": host, "pid": str(self.pid),
                "container": self.container or "", "pod": self.pod or "", "ort_version": self.ort_version or ""}


def container_of(cgroup_text):
    """(short container id, pod uid) from /proc/PID/cgroup text; None for what is absent."""
    container = pod = None
    for line in (cgroup_text or "").splitlines():
        path = line.split(":", 2)[-1]
        ids = _CONTAINER_ID.findall(path)
        if ids:
            container = ids[-1][:SHORT_ID]
        match = _POD_UID.search(path)
        if match:
            pod = match.group(1).replace("_", "-")
    return container, pod


def namespace_pid(pid):
    """The pid a process has in its innermost PID namespace (NSpid's last field)."""
    for line in (read_text(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("NSpid:"):
            fields = line.split()[1:]
            return int(fields[-1]) if fields else None
    return None


def environ_value(pid, name):
    try:
        with open(f"/proc/{pid}/environ", "rb") as stream:
            entries = stream.read().split(b"\0")
    except OSError:
        return None
    prefix = name.encode() + b"="
    for entry in entries:
        if entry.startswith(prefix):
            return entry[len(prefix):].decode(errors="replace")
    return None


def is_python(target):
    """Whether the process runs Python's onnxruntime (the ORT module it maps is the pybind one)."""
    return "onnxruntime_pybind11_state" in os.path.basename(target.ort_module or "")


def visible_path(pid, path):
    """`path` of process `pid` as this process can open it (through /proc/PID/root when needed)."""
    if _same_root(pid):
        return path
    return f"/proc/{pid}/root{path}"


def _same_root(pid):
    try:
        theirs, ours = os.stat(f"/proc/{pid}/root/"), os.stat("/")
    except OSError:
        return True
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def service_name(cmdline, override=None):
    if override:
        return override
    if not cmdline:
        return "unknown"
    return default_run_name(SimpleNamespace(name=None, pid=None, command=list(cmdline)))


def describe(pid, service=None):
    """Target for `pid` when it has ORT mapped, else None (also for processes that vanish)."""
    try:
        module = ort_native_module(pid)
    except OrtprofError:
        return None
    if module is None:
        return None
    try:
        process = psutil.Process(pid)
        started, cmdline = process.create_time(), process.cmdline()
    except psutil.Error:
        return None
    container, pod = container_of(read_text(f"/proc/{pid}/cgroup"))
    hook_dir = environ_value(pid, "ORTPROF_HOOK_DIR")
    _, version = ort_version_of_module(module)
    return Target(pid=pid, started=started, cmdline=cmdline, ort_module=module,
                  service=service_name(cmdline, service), ort_version=version, container=container, pod=pod,
                  ns_pid=namespace_pid(pid), hook_dir=visible_path(pid, hook_dir) if hook_dir else None)


def discover(pids=None, match=None, service=None, exclude=()):
    """ORT processes: among `pids` when given, else all of /proc; `match` (a compiled
    regex) must find the command line. Sorted by pid."""
    candidates = pids if pids else [int(name) for name in os.listdir("/proc") if name.isdigit()]
    found = []
    for pid in sorted(set(candidates)):
        if pid in exclude:
            continue
        target = describe(pid, service)
        if target is None:
            continue
        if match is not None and not match.search(" ".join(target.cmdline)):
            continue
        found.append(target)
    return found


def namespace_tids(pid):
    """{tid in the process's PID namespace: host tid}, empty when they are the same."""
    mapping = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return mapping
    for tid in tids:
        inner = namespace_pid(f"{pid}/task/{tid}")
        if inner is not None and inner != int(tid):
            mapping[inner] = int(tid)
    return mapping
