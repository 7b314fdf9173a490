"""CPU cgroups: read a process's CPU quota and throttling counters, and run a
workload in a CPU-limited group, as `docker run --cpus N` would.

Both hierarchies are handled. cgroup v1 mounts the `cpu` controller on its own
(`cpu.cfs_quota_us`, `cpu.cfs_period_us`, `cpu.stat` with `throttled_time` in
ns); cgroup v2 has one tree (`cpu.max`, `cpu.stat` with `throttled_usec`). On a
hybrid machine both are mounted and the cpu controller lives on exactly one of
them, so everything here works on "the hierarchy that has cpu".
"""
import atexit
import errno
import os
import re
import time
import warnings
from dataclasses import dataclass

from .errors import EnvironmentProblem, InputError
from .sysfiles import read_int, read_text

MOUNTINFO = "/proc/self/mountinfo"
PERIOD_US = 100_000      # what docker uses; short enough that throttling shows within seconds
MIN_QUOTA_US = 1_000     # the kernel rejects smaller quotas
GROUP_PREFIX = "ortprof-"
_STALE_GROUP = re.compile(r"^ortprof-(\d+)-\d+-")

# Fixes quoted in error messages.
FIX_ROOT = "run ortprof as root (sudo), or limit the container itself with `docker run --cpus N`"
FIX_CONTAINER = "limit the container itself with `docker run --cpus N`, or run ortprof on the host"


class CgroupProblem(EnvironmentProblem):
    """A CPU-limited group cannot be made here; `problem` and `fix` separately
    for `ortprof doctor`, joined into one line for everyone else."""

    def __init__(self, problem, fix):
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix = problem, fix


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy."""
    version: int            # 1 or 2
    mountpoint: str
    root: str               # cgroup path mounted there ("/" unless namespaced or bind-mounted)
    controllers: tuple
    read_only: bool = False

    @property
    def has_cpu(self):
        return "cpu" in self.controllers

    def directory(self, cgroup_path):
        """Directory of `cgroup_path` (as written in /proc/PID/cgroup), or None when
        that group is outside what this mount shows."""
        if self.root != "/":
            if cgroup_path != self.root and not cgroup_path.startswith(self.root + "/"):
                return None
            cgroup_path = cgroup_path[len(self.root):]
        return os.path.normpath(os.path.join(self.mountpoint, cgroup_path.lstrip("/")))


def _unescape_mount_field(text):
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def cgroup_mounts(mountinfo=MOUNTINFO):
    """Every mounted cgroup hierarchy, v1 and v2, in mount order."""
    try:
        with open(mountinfo) as stream:
            lines = stream.read().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 3:
            continue
        fstype, super_options = tail[0], tail[2].split(",")
        root, mountpoint = _unescape_mount_field(fields[3]), _unescape_mount_field(fields[4])
        read_only = "ro" in fields[5].split(",")
        if fstype == "cgroup":
            controllers = tuple(o for o in super_options
                                if o not in ("rw", "ro") and "=" not in o)
            mounts.append(Hierarchy(1, mountpoint, root, controllers, read_only))
        elif fstype == "cgroup2":
            controllers = tuple(read_text(os.path.join(mountpoint, "cgroup.controllers"), "").split())
            mounts.append(Hierarchy(2, mountpoint, root, controllers, read_only))
    return mounts


def cpu_hierarchy(mounts=None):
    """The hierarchy that carries the cpu controller, or None."""
    mounts = cgroup_mounts() if mounts is None else mounts
    with_cpu = [m for m in mounts if m.has_cpu]
    # A controller sits on one hierarchy at a time; prefer a full mount over a bind mount.
    with_cpu.sort(key=lambda m: m.root != "/")
    return with_cpu[0] if with_cpu else None


def cgroup_version(mounts=None):
    """Version of the hierarchy that has the cpu controller (1 or 2), else the
    version that is mounted at all, else None."""
    mounts = cgroup_mounts() if mounts is None else mounts
    hierarchy = cpu_hierarchy(mounts)
    if hierarchy is not None:
        return hierarchy.version
    versions = {m.version for m in mounts}
    return 2 if 2 in versions else (1 if 1 in versions else None)


def cgroup_layout(mounts=None):
    """"v1", "v2", "hybrid" (both mounted) or None."""
    mounts = cgroup_mounts() if mounts is None else mounts
    versions = {m.version for m in mounts}
    if versions == {1, 2}:
        return "hybrid"
    if versions:
        return f"v{versions.pop()}"
    return None


def process_cgroup_dir(pid=None, hierarchy=None):
    """Directory of the process's group in `hierarchy` (default: the cpu one), or None."""
    hierarchy = hierarchy or cpu_hierarchy()
    if hierarchy is None:
        return None
    text = read_text(f"/proc/{pid or 'self'}/cgroup")
    if text is None:
        return None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy_id, controllers, path = parts
        if hierarchy.version == 2 and hierarchy_id == "0" and controllers == "":
            return hierarchy.directory(path)
        if hierarchy.version == 1 and set(controllers.split(",")) & set(hierarchy.controllers):
            return hierarchy.directory(path)
    return None


def read_cpu_limit(directory, version):
    """(quota_us or None when unlimited, period_us or None) of one group."""
    if version == 2:
        text = read_text(os.path.join(directory, "cpu.max"))
        if text is None:
            return None, None
        quota, _, period = text.strip().partition(" ")
        return (None if quota == "max" else int(quota)), (int(period) if period else None)
    quota = read_int(os.path.join(directory, "cpu.cfs_quota_us"))
    period = read_int(os.path.join(directory, "cpu.cfs_period_us"))
    return (None if quota is None or quota < 0 else quota), period


def process_cpu_limit(pid=None):
    """The CPU limit that applies to a process: its own group's or the tightest of
    its ancestors' (a quota anywhere up the tree caps everything below it).

    Returns {version, path, quota_us, period_us, cpus, limited_by}; quota_us,
    period_us and limited_by describe the group whose quota binds; cpus is None
    when nothing limits the process. None when the process or cgroupfs is gone.
    """
    hierarchy = cpu_hierarchy()
    directory = process_cgroup_dir(pid, hierarchy)
    if directory is None:
        return None
    result = {"version": hierarchy.version, "path": directory, "quota_us": None,
              "period_us": read_cpu_limit(directory, hierarchy.version)[1],
              "cpus": None, "limited_by": None}
    level = directory
    while True:
        quota, period = read_cpu_limit(level, hierarchy.version)
        if quota is not None and period:
            cpus = quota / period
            if result["cpus"] is None or cpus < result["cpus"]:
                result.update(quota_us=quota, period_us=period, cpus=round(cpus, 4), limited_by=level)
        if os.path.normpath(level) == os.path.normpath(hierarchy.mountpoint):
            break
        level = os.path.dirname(level)
    return result


def cpu_stat(target=None):
    """Throttling counters of a group: {nr_periods, nr_throttled, throttled_usec}
    (plus usage_usec on v2). `target` is a pid (None = this process) or a group
    directory. v1 counts throttled time in ns; it is converted to us. None when
    the group or its cpu.stat cannot be read."""
    directory = target if isinstance(target, str) else process_cgroup_dir(target)
    if directory is None:
        return None
    text = read_text(os.path.join(directory, "cpu.stat"))
    if text is None:
        return None
    raw = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            raw[key] = int(value)
    if "throttled_usec" in raw:
        throttled = raw["throttled_usec"]
    elif "throttled_time" in raw:
        throttled = raw["throttled_time"] // 1000
    else:
        throttled = None   # v2 without the cpu controller: only usage counters
    stat = {"nr_periods": raw.get("nr_periods"), "nr_throttled": raw.get("nr_throttled"),
            "throttled_usec": throttled}
    if "usage_usec" in raw:
        stat["usage_usec"] = raw["usage_usec"]
    return stat


class LimitedCgroup:
    """A child cgroup with a CPU quota, removed again on exit.

        with LimitedCgroup(0.5, "demo") as group:
            proc = subprocess.Popen(cmd, preexec_fn=group.add_self)
            ...
            print(group.stat())

    `add_self` as preexec_fn puts the child in the group before it executes
    anything, so no CPU escapes the limit. On exit, processes still in the group
    are moved back to the group ortprof itself runs in, then the group is
    removed. Groups left behind by a killed ortprof are removed the next time
    one is created.
    """

    _sequence = 0

    def __init__(self, cpus, name="run", hierarchy=None, period_us=PERIOD_US):
        try:
            cpus = float(cpus)
        except (TypeError, ValueError):
            raise InputError(f"--cpus must be a number of CPUs, like 0.5 (got {cpus!r})")
        if not cpus > 0:
            raise InputError(f"--cpus must be greater than 0 (got {cpus:g})")
        self.cpus = cpus
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "run"
        self.period_us = int(period_us)
        self.quota_us = max(MIN_QUOTA_US, int(round(cpus * self.period_us)))
        self._hierarchy = hierarchy
        self.hierarchy = None
        self.path = None
        self.home = None        # the group ortprof runs in; leftovers go back there

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self):
        return self.create()

    def __exit__(self, exc_type, exc, tb):
        try:
            self.remove()
        except EnvironmentProblem as problem:
            if exc_type is None:
                raise
            warnings.warn(str(problem))   # do not hide the exception already on its way
        return False

    def create(self):
        if self.path is not None:
            return self
        hierarchy = self._hierarchy or cpu_hierarchy()
        if hierarchy is None:
            raise CgroupProblem(
                "--cpus needs the cgroup cpu controller, and none is mounted "
                "(no cgroup v1 `cpu`, no cgroup v2 with `cpu` in cgroup.controllers)", FIX_CONTAINER)
        if not hierarchy.has_cpu:
            raise CgroupProblem(
                f"--cpus needs the cgroup cpu controller, which is not available in the "
                f"cgroup v{hierarchy.version} tree at {hierarchy.mountpoint} "
                f"(its controllers: {' '.join(hierarchy.controllers) or 'none'})", FIX_CONTAINER)
        self.hierarchy = hierarchy
        self.home = process_cgroup_dir(None, hierarchy)
        if self.home is None:
            raise CgroupProblem(
                f"--cpus: cannot find this process's cgroup under {hierarchy.mountpoint}", FIX_CONTAINER)
        parent = self._parent_directory()
        _remove_stale_groups(parent)
        LimitedCgroup._sequence += 1
        path = os.path.join(parent, f"{GROUP_PREFIX}{os.getpid()}-{LimitedCgroup._sequence}-{self.name}")
        try:
            os.mkdir(path)
        except OSError as exc:
            raise _permission_problem(exc, f"cannot create cgroup {path}")
        self.path = path
        _open_groups.add(self)
        try:
            self._write_limit()
        except BaseException:
            self.remove()
            raise
        return self

    def _parent_directory(self):
        if self.hierarchy.version == 1:
            # Nest under our own group so any limit already on us still applies.
            return self.home
        # v2: a non-root group cannot hold processes and controller-enabled
        # children at once, so the new group goes next to ours unless we are at the root.
        mount = os.path.normpath(self.hierarchy.mountpoint)
        parent = self.home if os.path.normpath(self.home) == mount else os.path.dirname(self.home)
        available = read_text(os.path.join(parent, "cgroup.controllers"), "").split()
        if "cpu" not in available:
            raise CgroupProblem(
                f"--cpus: the cpu controller is not delegated to {parent}",
                f"as root: echo +cpu > {os.path.dirname(parent)}/cgroup.subtree_control")
        enabled = read_text(os.path.join(parent, "cgroup.subtree_control"), "").split()
        if "cpu" not in enabled:
            try:
                _write(os.path.join(parent, "cgroup.subtree_control"), "+cpu")
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    raise CgroupProblem(
                        f"--cpus: cannot enable the cpu controller in {parent}: it holds processes "
                        "(cgroup v2 forbids controllers there)",
                        "run ortprof in its own scope: systemd-run --scope -p Delegate=yes ortprof record ...")
                raise _permission_problem(exc, f"cannot enable the cpu controller in {parent}")
        return parent

    def _write_limit(self):
        try:
            if self.hierarchy.version == 2:
                _write(os.path.join(self.path, "cpu.max"), f"{self.quota_us} {self.period_us}")
            else:
                _write(os.path.join(self.path, "cpu.cfs_period_us"), str(self.period_us))
                _write(os.path.join(self.path, "cpu.cfs_quota_us"), str(self.quota_us))
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                # v1 refuses a child quota above an ancestor's
                limit = process_cpu_limit()
                if limit and limit["cpus"] is not None and self.cpus > limit["cpus"]:
                    raise InputError(
                        f"--cpus {self.cpus:g} exceeds the limit already on this process "
                        f"({limit['cpus']:g} CPUs, set in {limit['limited_by']}); use --cpus {limit['cpus']:g} or less")
            raise _permission_problem(exc, f"cannot set the CPU quota of {self.path}")

    def remove(self):
        """Move leftover processes back home and delete the group. Idempotent."""
        if self.path is None:
            return
        path, deadline, last_error = self.path, time.monotonic() + 3.0, None
        while time.monotonic() < deadline:
            for pid in self.pids():
                try:
                    _write(os.path.join(self.home, "cgroup.procs"), str(pid))
                except OSError as exc:
                    if exc.errno != errno.ESRCH:   # exited meanwhile: fine
                        last_error = exc
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                last_error = exc
                if exc.errno != errno.EBUSY:
                    break
                time.sleep(0.02)   # a moved or exiting task is still being detached
        if os.path.isdir(path):
            raise CgroupProblem(
                f"could not remove cgroup {path} ({last_error})",
                f"move its processes to {self.home}/cgroup.procs, then rmdir {path}")
        self.path = None
        _open_groups.discard(self)

    # -- use ---------------------------------------------------------------
    def add(self, pid):
        """Move a running process (all its threads) into the group."""
        self._require_created()
        try:
            _write(os.path.join(self.path, "cgroup.procs"), str(int(pid)))
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                raise InputError(f"no process with pid {pid}")
            raise _permission_problem(exc, f"cannot move pid {pid} into {self.path}")

    def add_self(self):
        """Move the calling process into the group; meant as Popen(preexec_fn=...)."""
        with open(os.path.join(self.path, "cgroup.procs"), "w") as stream:
            stream.write(str(os.getpid()))

    def pids(self):
        if self.path is None:
            return []
        text = read_text(os.path.join(self.path, "cgroup.procs"), "")
        return [int(line) for line in text.split()]

    def stat(self):
        self._require_created()
        return cpu_stat(self.path)

    def describe(self):
        """Facts for the run manifest."""
        return {"version": self.hierarchy.version if self.hierarchy else None, "path": self.path,
                "cpus": self.cpus, "quota_us": self.quota_us, "period_us": self.period_us}

    def _require_created(self):
        if self.path is None:
            raise RuntimeError("LimitedCgroup used outside its `with` block")


def probe_limited_group():
    """(ok, detail, fix): really creates and removes a small CPU-limited group."""
    try:
        with LimitedCgroup(0.5, "probe") as group:
            where, version = group.path, group.hierarchy.version
    except CgroupProblem as problem:
        return False, problem.problem, problem.fix
    except (EnvironmentProblem, InputError) as problem:
        return False, str(problem), FIX_ROOT
    return True, f"created and removed a CPU-limited cgroup v{version} group under {os.path.dirname(where)}", ""


def can_create_limited_group():
    """(ok, reason): can `--cpus` work here? Tries it for real."""
    ok, detail, fix = probe_limited_group()
    return ok, (detail if ok else f"{detail}; {fix}")


# -- helpers -----------------------------------------------------------------
_open_groups = set()


@atexit.register
def _remove_open_groups():
    # Covers exits that skip __exit__ (sys.exit in a signal handler, os._exit excepted).
    for group in list(_open_groups):
        try:
            group.remove()
        except Exception:   # noqa: BLE001 - best effort at interpreter exit
            pass


def _remove_stale_groups(parent):
    """Remove empty groups left by an ortprof that was killed before cleaning up."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        match = _STALE_GROUP.match(name)
        if not match or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue
        try:
            os.rmdir(os.path.join(parent, name))   # fails, as it should, when not empty
        except OSError:
            pass


def _pid_alive(pid):
    return os.path.exists(f"/proc/{pid}")


def _permission_problem(exc, what):
    if exc.errno == errno.EROFS:
        return CgroupProblem(f"{what}: cgroupfs is mounted read-only (usual inside containers)", FIX_CONTAINER)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return CgroupProblem(f"{what}: permission denied", FIX_ROOT)
    return CgroupProblem(f"{what}: {exc.strerror or exc}", FIX_ROOT)






def _write(path, text):
    with open(path, "w") as stream:
        stream.write(text)
