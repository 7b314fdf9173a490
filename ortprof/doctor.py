"""`ortprof doctor`: can this machine record, report and build? Each check says
ok / warning / fail, one line of detail, and the exact fix.

Checks come in two depths. The quick depth (file reads, `--version` calls,
probing system calls, and perf recording an empty child to learn whether it can
record the futex tracepoints, ~0.4 s once per process) is what `ortprof record`
runs before it starts, through `require_perf()` / `require_pyspy()`. The thorough depth, the default of
`ortprof doctor`, also runs the real thing: perf sampling a child Python with
dwarf call graphs, perf recording futex tracepoints, py-spy dumping a child
Python and an `import onnxruntime` in a subprocess.
"""
import errno
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

from . import cgroup, environment as env
from .checks import FAIL, OK, WARNING, Check, failures
from .errors import EnvironmentProblem, InputError, OrtprofError
from .signals import SIGNALS
from .signals.samples import SIGNAL as SAMPLES

SCHEMA = "ortprof.doctor/1"

# Subsets other commands run: record's are what its signals need of the machine.
RECORD_CHECKS = tuple(dict.fromkeys(check for signal in SIGNALS for check in signal.checks))
BUILD_CHECKS = ("build-git", "build-cmake", "build-compiler", "build-ninja",
                "build-python-headers", "build-disk")

MIN_CMAKE = (3, 28)            # ONNX Runtime's build docs: "cmake-3.28 or higher"

FIX_PARANOID_KERNEL = ("sudo sysctl -w kernel.perf_event_paranoid=1 "
                       "(persist it in /etc/sysctl.d/), or run ortprof as root")
FIX_PERF_SECCOMP = ("start the container with `--cap-add PERFMON` (Docker 23+; older Docker: "
                    "`--cap-add SYS_ADMIN`) or `--security-opt seccomp=unconfined`")


class Facts:
    """Facts several checks need, computed once per run."""

    @cached_property
    def perf(self):
        return env.perf_info()

    @cached_property
    def capabilities(self):
        return env.capabilities()

    @cached_property
    def root(self):
        return env.is_root()

    @cached_property
    def paranoid(self):
        return env.perf_event_paranoid()

    @cached_property
    def seccomp(self):
        return env.seccomp_mode()

    @cached_property
    def user_sampling(self):
        """errno of opening a user-level sampling event (0 = permitted)."""
        probe = env.probe_perf_event_open()
        if probe is None:   # no probe on this machine: judge by the sysctl
            probe = 0 if self.perf_privileged or self.paranoid is None or self.paranoid <= 2 else errno.EACCES
        return probe

    @cached_property
    def perf_privileged(self):
        return self.root or bool({"CAP_PERFMON", "CAP_SYS_ADMIN"} & self.capabilities)

    @cached_property
    def container(self):
        return env.container_info()

    def perf_blocker(self):
        """(detail, fix) when perf cannot sample at all, else None."""
        if self.perf is None:
            return "not tested: perf is not installed", "fix the `perf` check first"
        if self.perf["version"] is None:
            return "not tested: perf does not run", "fix the `perf` check first"
        if self.user_sampling != 0:
            return "not tested: perf may not sample here", "fix the `perf-permission` check first"
        return None


# -- perf ---------------------------------------------------------------------------
def check_perf(facts, thorough):
    perf = facts.perf
    if perf is None:
        return Check("perf", FAIL, "perf is not installed (not on PATH)", env.perf_install_command())
    if perf["version"] is None:
        return Check("perf", FAIL, f"{perf['path']} does not run: {perf['error']}",
                     env.perf_install_command())
    return Check("perf", OK, f"{perf['path']}: perf {perf['version']}")


def _perf_refusal(code, facts, what):
    """(detail, fix) for a refused perf_event_open."""
    name = errno.errorcode.get(code, str(code))
    if facts.seccomp == 2 and code in (errno.EPERM, errno.ENOSYS):
        return (f"perf_event_open is blocked by a seccomp filter ({name}), "
                "as in a container runtime's default profile", FIX_PERF_SECCOMP)
    if code in (errno.EACCES, errno.EPERM):
        return (f"perf_event_paranoid={facts.paranoid} forbids {what} for unprivileged users ({name})",
                FIX_PARANOID_KERNEL)
    if code in (errno.ENOSYS, errno.ENOENT, errno.ENODEV):
        return (f"the kernel has no perf events support ({name})",
                "use a kernel built with CONFIG_PERF_EVENTS, or record with --profiler py-spy")
    return f"perf_event_open refused {what}: {os.strerror(code)} ({name})", FIX_PARANOID_KERNEL


def _kptr_hidden(facts):
    kptr = env.kptr_restrict()
    if kptr is None:
        return False
    return kptr >= 2 or (kptr == 1 and not (facts.root or "CAP_SYSLOG" in facts.capabilities))


def check_perf_permission(facts, thorough):
    paranoid, kptr = facts.paranoid, env.kptr_restrict()
    who = "root" if facts.root else ("CAP_PERFMON" if facts.perf_privileged else "unprivileged")
    settings = f"perf_event_paranoid={paranoid}, kptr_restrict={kptr}, {who}"
    if facts.user_sampling != 0:
        detail, fix = _perf_refusal(facts.user_sampling, facts, "sampling processes")
        return Check("perf-permission", FAIL, detail, fix)
    kernel = env.probe_perf_event_open(kernel=True)
    if kernel is None:
        kernel = 0 if facts.perf_privileged or paranoid is None or paranoid <= 1 else errno.EACCES
    problems, fixes = [], []
    if kernel != 0:
        problems.append(f"user-space sampling only ({settings}): kernel frames are missing")
        fixes.append(FIX_PARANOID_KERNEL)
    if _kptr_hidden(facts):
        problems.append(f"kernel.kptr_restrict={kptr} hides kernel symbols: kernel frames show as addresses")
        fixes.append("sudo sysctl -w kernel.kptr_restrict=0")
    if problems:
        return Check("perf-permission", WARNING, "; ".join(problems), "; ".join(fixes))
    return Check("perf-permission", OK, f"{settings}: user and kernel sampling permitted")


# A child that spends its time three Python calls deep, so a good unwind is deep.
_BUSY_CHILD = """
import time
def doctor_leaf(end):
    while time.perf_counter() < end:
        pass
def doctor_middle(end):
    doctor_leaf(end)
doctor_middle(time.perf_counter() + {seconds})
"""

# A child whose threads block and wake each other: futex calls on every hand-off.
_FUTEX_CHILD = """
import threading
for _ in range(20):
    ready = threading.Event()
    worker = threading.Thread(target=ready.wait)
    worker.start()
    ready.set()
    worker.join()
"""


def _perf_record_child(perf, event, child_source, extra=()):
    """Record a child Python under perf; returns the stacks from `perf script`
    as lists of frame lines, or raises OrtprofError with perf's own message."""
    with tempfile.TemporaryDirectory(prefix="ortprof-doctor-") as tmp:
        data = os.path.join(tmp, "perf.data")
        command = [perf, "record", "-q", "--no-buildid", "-e", event, *extra, "-o", data,
                   "--", sys.executable, "-c", child_source]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise OrtprofError("perf record did not finish within 60 s")
        if done.returncode != 0 or not os.path.exists(data):
            raise OrtprofError(f"perf record failed: {_last_line(done.stderr) or done.returncode}")
        script = subprocess.run([perf, "script", "-i", data, "-F", "comm,tid,event,ip,sym,dso"],
                                capture_output=True, text=True, timeout=60)
        if script.returncode != 0:
            raise OrtprofError(f"perf script failed: {_last_line(script.stderr)}")
    return _stacks(script.stdout)


def _stacks(script_output):
    """Frame lines of each sample in `perf script` output (samples are blank-line separated)."""
    stacks, current, in_sample = [], [], False
    for line in script_output.splitlines():
        if not line.strip():
            if in_sample:
                stacks.append(current)
            current, in_sample = [], False
        elif line[:1] in (" ", "\t"):
            current.append(line.strip())
        else:
            if in_sample:
                stacks.append(current)
            current, in_sample = [], True
    if in_sample:
        stacks.append(current)
    return stacks


def _perf_build_options(perf):
    """`perf version --build-options` output ("" when this perf cannot tell)."""
    try:
        done = subprocess.run([perf, "version", "--build-options"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def check_perf_dwarf(facts, thorough):
    blocker = facts.perf_blocker()
    if blocker:
        return Check("perf-dwarf", FAIL, *blocker)
    build_options = _perf_build_options(facts.perf["path"])
    if re.search(r"libdw-dwarf-unwind:\s*\[\s*OFF", build_options) and \
            re.search(r"libunwind:\s*\[\s*OFF", build_options):
        return Check("perf-dwarf", FAIL, "this perf was built without a dwarf unwinder (libdw and libunwind are OFF)",
                     env.perf_install_command())
    if not thorough:
        probe = env.probe_perf_event_open(user_stacks=True)
        if probe not in (0, None):
            detail, fix = _perf_refusal(probe, facts, "user stack sampling")
            return Check("perf-dwarf", FAIL, detail, fix)
        return Check("perf-dwarf", OK, "user register and stack sampling (--call-graph dwarf) permitted")
    try:
        stacks = _perf_record_child(facts.perf["path"], "cpu-clock", _BUSY_CHILD.format(seconds=0.4),
                                    ("-F", "499", "--call-graph", "dwarf,16384"))
    except OrtprofError as exc:
        return Check("perf-dwarf", FAIL, f"sampling a child process failed: {exc}", FIX_PARANOID_KERNEL)
    if len(stacks) < 20:
        return Check("perf-dwarf", FAIL, f"perf recorded only {len(stacks)} samples of a busy child in 0.4 s",
                     "check that the cpu-clock event works: perf stat -e cpu-clock -- true")
    depth = statistics.median(len(stack) for stack in stacks)
    rooted = sum(any("_start" in frame or "start_thread" in frame for frame in stack) for stack in stacks)
    share = rooted / len(stacks)
    summary = f"{len(stacks)} samples of a child Python, median stack depth {depth:g}, {share:.0%} unwound to the root"
    if depth < 5 or share < 0.5:
        return Check("perf-dwarf", WARNING, f"shallow dwarf stacks: {summary}",
                     "use a perf built with libdw or libunwind (`perf version --build-options`); "
                     "raise the stack copy size (--call-graph dwarf,65528)")
    return Check("perf-dwarf", OK, f"perf record --call-graph dwarf works: {summary}")


FUTEX_CONSEQUENCE = "futex waits will not be attributed to their callers"


def futex_refusal(error, facts):
    """(detail, fix) for perf's own reason for not recording the futex tracepoints."""
    text = error.lower()
    if "unable to find debugfs/tracefs" in text:
        if facts.container["in_container"]:
            return (f"no tracefs in this container: {FUTEX_CONSEQUENCE}",
                    "start the container with `-v /sys/kernel/tracing:/sys/kernel/tracing` "
                    "(and `--cap-add PERFMON`), or `--privileged`")
        if not facts.root:
            return (f"tracefs is not mounted and perf may mount it only as root: {FUTEX_CONSEQUENCE}",
                    "run ortprof as root (perf then mounts tracefs itself), or "
                    "`sudo mount -t tracefs nodev /sys/kernel/tracing` once per boot")
        return (f"perf found no tracefs, even as root: {FUTEX_CONSEQUENCE}",
                "use a kernel with CONFIG_FTRACE (tracefs), or `mount -t tracefs nodev /sys/kernel/tracing`")
    if "no permissions to read" in text:
        return (f"tracefs (/sys/kernel/tracing) is readable by root only: {FUTEX_CONSEQUENCE}",
                "run ortprof as root, or `sudo mount -o remount,mode=755 /sys/kernel/tracing` "
                "and `sudo sysctl -w kernel.perf_event_paranoid=-1`")
    if "not found" in text:
        return (f"the kernel has no syscalls:sys_enter_futex tracepoint (CONFIG_FTRACE_SYSCALLS): "
                f"{FUTEX_CONSEQUENCE}", "use a kernel built with CONFIG_FTRACE_SYSCALLS")
    if facts.seccomp == 2 and ("not permitted" in text or "permission" in text):
        return (f"perf_event_open of tracepoints is blocked by a seccomp filter: {FUTEX_CONSEQUENCE}",
                FIX_PERF_SECCOMP)
    if "permission" in text or "paranoid" in text or "not permitted" in text:
        return (f"perf_event_paranoid={facts.paranoid}: tracepoints need -1 or root/CAP_PERFMON "
                f"({error}): {FUTEX_CONSEQUENCE}", "sudo sysctl -w kernel.perf_event_paranoid=-1, or run ortprof as root")
    return f"perf cannot record the futex tracepoints ({error}): {FUTEX_CONSEQUENCE}", "run ortprof as root"


def check_futex_tracepoints(facts, thorough):
    """Asks perf (env.perf_tracepoint_probe), which also mounts tracefs when it
    is root and tracefs is not mounted yet, as on a freshly booted machine."""
    blocker = facts.perf_blocker()
    if blocker:
        return Check("futex-tracepoints", WARNING, *blocker)
    probe = env.perf_tracepoint_probe(facts.perf["path"])
    if not probe["usable"]:
        return Check("futex-tracepoints", WARNING, *futex_refusal(probe["error"], facts))
    if not thorough:
        return Check("futex-tracepoints", OK, "perf can record syscalls:sys_enter_futex/sys_exit_futex "
                                              "(probe recording of an empty child)")
    try:
        stacks = _perf_record_child(facts.perf["path"], "syscalls:sys_enter_futex", _FUTEX_CHILD,
                                    ("--call-graph", "dwarf,8192"))
    except OrtprofError as exc:
        return Check("futex-tracepoints", WARNING, f"recording futex tracepoints failed: {exc}",
                     "run ortprof as root, or sudo sysctl -w kernel.perf_event_paranoid=-1")
    with_stacks = sum(len(stack) >= 2 for stack in stacks)
    if with_stacks == 0:
        return Check("futex-tracepoints", WARNING,
                     f"{len(stacks)} futex events recorded from a child, none with a user stack",
                     "use a perf built with libdw or libunwind (`perf version --build-options`)")
    return Check("futex-tracepoints", OK,
                 f"recorded {len(stacks)} futex calls of a child, {with_stacks} with call stacks")


BPF_CONSEQUENCE = ("futex calls are traced one by one by perf instead of counted in the kernel "
                   "(costs latency when spinning is off)")
FIX_BPF_OR_PERF = "or record with --futex-method perf"


def bpftrace_install_command():
    return env.install_command({family: "bpftrace" for family in ("debian", "fedora", "arch", "alpine", "suse")})


def check_futex_bpf(facts, thorough):
    """Whether `record` can count futex calls in the kernel (bpftrace), else why and the fix.
    Not usable is a warning: record then uses perf's per-call tracepoints."""
    from .signals.futex import bpf as futex_bpf
    from .signals.sched.compiled import BUILD_FIX, loader_path
    loader, _ = loader_path()
    compiled_failed = None
    if loader and facts.root:
        found = f"compiled BPF program (libbpf, {loader}), root"
        if not thorough:
            return Check("futex-bpf", OK, f"{found}: futex calls are counted in the kernel (bpftrace is the fallback)")
        try:
            calls, attach_seconds = _count_child_futex_calls(
                lambda directory: futex_bpf.start_compiled_counter(loader, directory, sched=False))
        except OrtprofError as exc:
            compiled_failed = f"the compiled BPF program does not run ({exc}); "
        else:
            if calls:
                return Check("futex-bpf", OK, f"{found}: counted {calls} futex calls of a child in the kernel "
                                              f"(attached in {attach_seconds:.2f} s)")
            compiled_failed = "the compiled BPF program counted no futex calls of a child; "
    info = env.bpftrace_info()
    if info is None:
        return Check("futex-bpf", WARNING, f"bpftrace is not installed: {BPF_CONSEQUENCE}",
                     bpftrace_install_command(), apt=("bpftrace",))
    if info["version"] is None:
        return Check("futex-bpf", WARNING, f"{info['path']} does not run ({info['error']}): {BPF_CONSEQUENCE}",
                     bpftrace_install_command(), apt=("bpftrace",))
    if not facts.root:
        return Check("futex-bpf", WARNING, f"bpftrace runs as root only: {BPF_CONSEQUENCE}",
                     f"run ortprof as root, {FIX_BPF_OR_PERF}")
    if env.tracepoint_format("syscalls:sys_enter_futex") is None:
        return Check("futex-bpf", WARNING,
                     f"tracefs is not mounted (bpftrace reads the futex tracepoint's format there): {BPF_CONSEQUENCE}",
                     "mount -t tracefs nodev /sys/kernel/tracing")
    found = f"bpftrace {info['version']} ({info['path']}), root, syscalls:sys_enter_futex"
    if not thorough:
        return Check("futex-bpf", OK, f"{found}: futex calls are counted in the kernel")
    try:
        calls, attach_seconds = _count_child_futex_calls(
            lambda directory: futex_bpf.start_futex_counter(info["path"], directory))
    except OrtprofError as exc:
        if facts.container["in_container"]:
            fix = "start the container with `--privileged` (bpf() needs CAP_BPF, CAP_PERFMON and no seccomp filter on it)"
        elif facts.seccomp == 2:
            fix = f"run ortprof outside the seccomp filter that confines it (bpf() may be blocked), {FIX_BPF_OR_PERF}"
        else:
            fix = f"check `bpftrace -e 'BEGIN {{ exit(); }}'` as root, {FIX_BPF_OR_PERF}"
        return Check("futex-bpf", WARNING, f"{compiled_failed or ''}{exc}: {BPF_CONSEQUENCE}", fix)
    if calls == 0:
        return Check("futex-bpf", WARNING, f"{compiled_failed or ''}bpftrace attached but counted no futex calls "
                                           f"of a child: {BPF_CONSEQUENCE}", "record with --futex-method perf")
    return Check("futex-bpf", WARNING if compiled_failed else OK,
                 f"{compiled_failed or ''}{found}: counted {calls} futex calls of a child in the kernel "
                 f"(attached in {attach_seconds:.2f} s)", BUILD_FIX if compiled_failed else "")


SCHED_CONSEQUENCE = "no scheduler states per thread (runnable, throttled, who held the CPU) in the report"
SCHED_TRACEPOINT = "sched:sched_switch"


def check_sched_bpf(facts, thorough):
    """Which program `record` follows the scheduler with: the compiled one (libbpf; by default),
    else bpftrace (only with record --sched: it costs much more), else why neither, and the fix."""
    from .signals.sched.compiled import BUILD_FIX, loader_path
    loader, why_not = loader_path()
    if loader and facts.root:
        found = f"compiled BPF program (libbpf, {loader}): scheduler events are recorded by default"
        if not thorough:
            return Check("sched-bpf", OK, found)
        try:
            seconds = _run_compiled_program(loader)
        except OrtprofError as exc:
            why_not = f"the compiled BPF program does not run: {exc}"
        else:
            return Check("sched-bpf", OK, f"{found} (attached and stopped cleanly in {seconds:.2f} s)")
    bpftrace = sched_bpftrace_check(facts)
    if bpftrace.status != OK:
        return Check("sched-bpf", WARNING, f"{why_not or 'not root'}; {bpftrace.detail}",
                     BUILD_FIX if facts.root else bpftrace.fix, apt=bpftrace.apt)
    return Check("sched-bpf", WARNING, f"{why_not or 'not root'}: only {bpftrace.detail}, with record --sched "
                                       "(at p50 x1.4-2.9, +6.5-10 CPU points with spinning off)", BUILD_FIX)


def sched_bpftrace_check(facts):
    """Whether the bpftrace program can follow the scheduler (bpftrace, root, the sched tracepoints);
    on a machine where tracefs is not mounted yet, as root, perf mounts it (as for futex)."""
    info = env.bpftrace_info()
    if info is None or info["version"] is None:
        return Check("sched-bpf", WARNING, f"bpftrace is not installed or does not run: {SCHED_CONSEQUENCE}",
                     bpftrace_install_command(), apt=("bpftrace",))
    if not facts.root:
        return Check("sched-bpf", WARNING, f"bpftrace runs as root only: {SCHED_CONSEQUENCE}", "run ortprof as root")
    if env.tracepoint_format(SCHED_TRACEPOINT) is None and (facts.perf or {}).get("path"):
        env.perf_tracepoint_probe(facts.perf["path"], (SCHED_TRACEPOINT,))   # perf mounts tracefs as root
    if env.tracepoint_format(SCHED_TRACEPOINT) is None:
        return Check("sched-bpf", WARNING,
                     f"tracefs is not mounted (bpftrace reads the sched tracepoints' formats there): {SCHED_CONSEQUENCE}",
                     "mount -t tracefs nodev /sys/kernel/tracing")
    return Check("sched-bpf", OK, f"bpftrace {info['version']}, root, {SCHED_TRACEPOINT}: scheduler events "
                                  "of the recorded process are followed in the kernel")


def _run_compiled_program(loader):
    """Seconds the compiled program took to attach; it must stop on SIGINT with its end line."""
    from .signals.futex import bpf as futex_bpf
    with tempfile.TemporaryDirectory(prefix="ortprof-doctor-") as tmp:
        counter, seconds = futex_bpf.start_compiled_counter(loader, tmp, sched=True)
        counter.stop(timeout=10)
        with open(os.path.join(tmp, futex_bpf.FUTEX_BPF_OUT)) as stream:
            ended = futex_bpf.END_LINE in stream.read()
        if counter.exit_code != 0 or not ended:
            raise OrtprofError(f"exit code {counter.exit_code}, {'with' if ended else 'without'} its end line: "
                               f"{futex_bpf.bpftrace_complaint(counter.log_tail(20))}")
    return seconds


def _count_child_futex_calls(start_counter):
    """(futex calls the counting program saw from a child's thread hand-offs, attach seconds);
    start_counter(directory) -> (counter, attach seconds) starts the program (bpftrace or compiled)."""
    from .signals.futex import bpf as futex_bpf
    from .signals.futex.counts import load_futex_counts
    child = subprocess.Popen([sys.executable, "-c", "import sys\nsys.stdin.readline()\n" + _FUTEX_CHILD],
                             stdin=subprocess.PIPE)
    try:
        with tempfile.TemporaryDirectory(prefix="ortprof-doctor-") as tmp:
            counter, attach_seconds = start_counter(tmp)
            try:
                futex_bpf.set_target(child.pid)
                futex_bpf.mark_window(True)
                child.communicate(b"\n", timeout=60)
                futex_bpf.mark_window(False)
            finally:
                counter.stop(timeout=10)
            counts = load_futex_counts(os.path.join(tmp, futex_bpf.FUTEX_BPF_OUT))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return sum(stats.calls for stats in counts.threads.values()), attach_seconds


# -- uprobes --------------------------------------------------------------------------
UPROBE_CONSEQUENCE = "calls into ORT's C API (C, C++, C#, Java, Node, Rust clients) cannot be timed"


def _entry_point_offset(path):
    """File offset of an ELF executable's entry point (where `perf probe -x` places a probe)."""
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as stream:
        elf = ELFFile(stream)
        entry = elf["e_entry"]
        for segment in elf.iter_segments():
            if segment["p_type"] == "PT_LOAD" and segment["p_vaddr"] <= entry < segment["p_vaddr"] + segment["p_filesz"]:
                return entry - segment["p_vaddr"] + segment["p_offset"]
    raise InputError(f"{path}: its entry point {entry:#x} is in no loadable segment")


def _count_probe_hits(perf, event):
    """How often `event` fired while a child Python started and exited (perf stat)."""
    done = subprocess.run([perf, "stat", "-x", ",", "-e", event, "--", sys.executable, "-c", ""],
                          capture_output=True, text=True, timeout=60)
    for line in done.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == event:
            return int(fields[0]) if fields[0].isdigit() else 0
    raise OrtprofError(f"perf stat -e {event} failed: {_last_line(done.stderr) or done.returncode}")


def check_uprobes(facts, thorough):
    """Whether perf can add uprobes at user-space addresses (tracefs' uprobe_events, as root);
    removes the probes of ortprof processes that died before removing theirs."""
    from .signals.capi import probes
    blocker = facts.perf_blocker()
    if blocker:
        return Check("uprobes", WARNING, *blocker)
    if not facts.root:
        return Check("uprobes", WARNING, f"adding uprobes needs root (tracefs' uprobe_events): {UPROBE_CONSEQUENCE}",
                     "run ortprof as root")
    perf = facts.perf["path"]
    try:
        stale = probes.remove_stale(perf)   # `perf probe -l` first: as root, perf mounts tracefs if needed
    except OrtprofError as exc:
        return Check("uprobes", WARNING, f"{exc}: {UPROBE_CONSEQUENCE}",
                     "mount -t tracefs nodev /sys/kernel/tracing, then run `ortprof doctor --check uprobes` again")
    tracefs = next((root for root in env.TRACEFS_ROOTS if os.path.exists(os.path.join(root, "uprobe_events"))), None)
    if tracefs is None:
        return Check("uprobes", WARNING, f"the kernel offers no uprobe_events in tracefs: {UPROBE_CONSEQUENCE}",
                     "use a kernel built with CONFIG_UPROBES=y and CONFIG_UPROBE_EVENTS=y")
    python = os.path.realpath(sys.executable)
    added = probes.Uprobes(perf)
    try:
        try:
            added.add_at(python, _entry_point_offset(python), "doctor_entry")
            hits = _count_probe_hits(perf, added.events[0]) if thorough and added.events else None
        finally:
            added.remove()
    except OrtprofError as exc:
        fix = ("start the container with `--privileged` and `-v /sys/kernel/tracing:/sys/kernel/tracing`"
               if facts.container["in_container"] else "run ortprof as root, on a kernel with CONFIG_UPROBE_EVENTS=y")
        return Check("uprobes", WARNING, f"{exc}: {UPROBE_CONSEQUENCE}", fix)
    detail = f"perf probe added and removed an entry uprobe on {python} ({tracefs}/uprobe_events)"
    if hits is not None:
        if hits < 1:
            return Check("uprobes", WARNING, f"{detail}, but it did not fire when a child Python started: "
                                             f"{UPROBE_CONSEQUENCE}", "use a kernel built with CONFIG_UPROBES=y")
        detail += f"; it fired {hits} time(s) as a child Python started"
    if stale:
        detail += f"; removed the probes of ortprof processes that are gone: {', '.join(stale)}"
    return Check("uprobes", OK, detail)


# -- py-spy ----------------------------------------------------------------------------
def _ptrace_refusal(facts):
    """(detail, fix) when py-spy will not be allowed to read the workload's memory, else None."""
    in_container = facts.container["in_container"]
    probe = env.probe_process_vm_readv()
    if probe not in (0, None):
        return (f"process_vm_readv is refused ({errno.errorcode.get(probe, probe)}): a seccomp filter "
                "blocks it, as in older container runtimes' default profiles",
                "start the container with `--cap-add SYS_PTRACE` (or `--security-opt seccomp=unconfined`)")
    scope = env.ptrace_scope()
    privileged = "CAP_SYS_PTRACE" in facts.capabilities
    cap_fix = "run ortprof as root" + (" in a container started with `--cap-add SYS_PTRACE`" if in_container else "")
    if scope is None or scope == 0 or (privileged and scope < 3):
        return None
    if scope == 1:
        return ("kernel.yama.ptrace_scope=1: py-spy may only attach to its own descendants, and the "
                "workload is not one", f"sudo sysctl -w kernel.yama.ptrace_scope=0, or {cap_fix}")
    if scope == 2:
        return "kernel.yama.ptrace_scope=2: only processes with CAP_SYS_PTRACE may attach", cap_fix
    return ("kernel.yama.ptrace_scope=3: ptrace is disabled until reboot",
            "set kernel.yama.ptrace_scope=1 in /etc/sysctl.d/ and reboot")


_WAITING_CHILD = """
import sys, time
def doctor_wait():
    print("ready", flush=True)
    time.sleep(60)
doctor_wait()
"""


def _pyspy_dump_child(pyspy):
    """Run `py-spy dump` on a child Python; returns None on success, else the error line."""
    child = subprocess.Popen([sys.executable, "-c", _WAITING_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()   # the interpreter is initialised once it prints
        done = subprocess.run([pyspy, "dump", "--pid", str(child.pid)],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "py-spy dump did not finish within 30 s"
    finally:
        child.kill()
        child.wait()
    if done.returncode != 0 or "doctor_wait" not in done.stdout:
        return _last_line(done.stderr) or _last_line(done.stdout) or f"exit code {done.returncode}"
    return None


def check_pyspy(facts, thorough):
    pyspy = env.find_tool("py-spy")
    if pyspy is None:
        return Check("py-spy", FAIL, "py-spy is not installed (not on PATH nor next to this Python)",
                     f"{sys.executable} -m pip install py-spy")
    version, error = env.tool_version(pyspy)
    if version is None:
        return Check("py-spy", FAIL, f"{pyspy} does not run: {error}",
                     f"{sys.executable} -m pip install --force-reinstall py-spy")
    refusal = _ptrace_refusal(facts)
    if refusal:
        return Check("py-spy", FAIL, *refusal)
    scope = env.ptrace_scope()
    policy = "no Yama ptrace restriction" if scope is None else f"kernel.yama.ptrace_scope={scope}"
    if not thorough:
        return Check("py-spy", OK, f"{pyspy}: {version}; {policy}")
    error = _pyspy_dump_child(pyspy)
    if error:
        return Check("py-spy", FAIL, f"py-spy could not read a child Python: {error}",
                     "run ortprof as root, or in a container add `--cap-add SYS_PTRACE`")
    return Check("py-spy", OK, f"{pyspy}: {version}; dumped a child Python's stack ({policy})")


def check_attach(facts, thorough):
    """What `record --pid` of a Python service needs to attach the hook's recording: gdb, and a
    ptrace policy that lets this user trace processes it did not start."""
    gdb = env.find_tool("gdb")
    if gdb is None:
        return Check("attach", WARNING, "gdb is not installed: `record --pid` of a Python service records "
                     "without run() latency", "apt-get install gdb", apt=("gdb",))
    refusal = _ptrace_refusal(facts)
    if refusal:
        detail, fix = refusal
        return Check("attach", WARNING, f"{detail.replace('py-spy', 'gdb')}: `record --pid` cannot attach to a "
                     "Python service (it records without run() latency)", fix)
    scope = env.ptrace_scope()
    policy = "no Yama ptrace restriction" if scope is None else f"kernel.yama.ptrace_scope={scope}"
    return Check("attach", OK, f"{gdb}; {policy}: `record --pid` attaches to Python services (docs/attach.md)")


# -- machine ---------------------------------------------------------------------------
def check_container(facts, thorough):
    info = facts.container
    parts = []
    if info["in_container"]:
        parts.append(f"in a {info['kind']} container ({'; '.join(info['evidence'])})")
        if info["seccomp"] == 2:
            parts.append("seccomp filter active")
        caps = info["capabilities"]
        parts.append("capabilities: " + (", ".join(caps) if caps else "none of SYS_ADMIN/PERFMON/SYS_PTRACE"))
    else:
        parts.append("not in a container" + (f" ({'; '.join(info['evidence'])})" if info["evidence"] else ""))
    if info["virtual_machine"]:
        parts.append("virtual machine (hypervisor CPU flag): hardware counters are usually absent, perf uses cpu-clock")
    return Check("container", OK, "; ".join(parts))


def check_cgroup(facts, thorough):
    mounts = cgroup.cgroup_mounts()
    hierarchy = cgroup.cpu_hierarchy(mounts)
    layout = cgroup.cgroup_layout(mounts)
    if hierarchy is None:
        where = f"cgroup {layout or 'not mounted'}, no cpu controller"
    else:
        where = f"cgroup v{hierarchy.version} cpu controller at {hierarchy.mountpoint}"
        if layout == "hybrid":
            where += " (hybrid layout)"
    limit = cgroup.process_cpu_limit()
    if limit and limit["cpus"] is not None:
        where += f"; this process is limited to {limit['cpus']:g} CPUs ({limit['limited_by']})"
    ok, detail, fix = cgroup.probe_limited_group()
    if ok:
        return Check("cgroup", OK, f"{where}; --cpus works: {detail}")
    return Check("cgroup", WARNING, f"{where}; --cpus unavailable: {detail}", fix)


def check_onnxruntime(facts, thorough):
    module = env.installed_ort_module()
    if module is None:
        import importlib.util
        reason = ("onnxruntime is not installed" if importlib.util.find_spec("onnxruntime") is None
                  else "onnxruntime has no native module (onnxruntime_pybind11_state*.so)")
        return Check("onnxruntime", FAIL, f"{reason} for {sys.executable}",
                     f"{sys.executable} -m pip install onnxruntime")
    try:
        info = env.ort_module_info(module)
    except InputError as exc:
        return Check("onnxruntime", FAIL, str(exc), f"{sys.executable} -m pip install --force-reinstall onnxruntime")
    symbols = {"stripped": "stripped (ORT frames get names from .eh_frame boundaries only; "
                           "`ortprof build` makes a build with symbols)",
               "symtab": "function symbols (.symtab), no line info",
               "dwarf": "full debug info (DWARF)"}[info["symbol_status"]]
    build_id = (info["build_id"] or "none")[:12]
    detail = f"{info['package'] or 'onnxruntime'} {info['version'] or '?'}, {module}, build-id {build_id}, {symbols}"
    if thorough:
        probe = ("import json, onnxruntime as o; "
                 "print(json.dumps([o.__version__, o.get_available_providers()]))")
        try:
            done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return Check("onnxruntime", FAIL, "`import onnxruntime` did not finish within 120 s",
                         f"{sys.executable} -m pip install --force-reinstall onnxruntime")
        if done.returncode != 0:
            return Check("onnxruntime", FAIL, f"`import onnxruntime` fails: {_last_line(done.stderr)}",
                         f"{sys.executable} -m pip install --force-reinstall onnxruntime")
        try:
            _, providers = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return Check("onnxruntime", FAIL, f"`import onnxruntime` printed no version: {_last_line(done.stdout)!r}",
                         f"{sys.executable} -m pip install --force-reinstall onnxruntime")
        detail += f"; imports, providers: {', '.join(providers)}"
    return Check("onnxruntime", OK, detail)


def check_cpu(facts, thorough):
    info = env.cpu_info()
    flags = info["flags_of_interest"]
    cores = f"{info['logical_cores']} logical / {info['physical_cores'] or '?'} physical cores"
    if flags.get("waitpkg"):
        spin = "WAITPKG present: ORT's SpinPause executes TPAUSE (a timed wait) instead of PAUSE"
    elif info["architecture"] in ("x86_64", "i686"):
        spin = "no WAITPKG: ORT's SpinPause executes PAUSE"
    else:
        spin = f"{info['architecture']}: no x86 PAUSE/TPAUSE"
    vector = ", ".join(name for name in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if flags.get(name))
    detail = f"{info['model'] or 'unknown CPU'}, {cores}; {spin}" + (f"; {vector}" if vector else "")
    return Check("cpu", OK, detail)


# -- build tools -----------------------------------------------------------------------
def _version_tuple(text):
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(part) for part in match.groups() if part is not None) if match else None


def check_build_git(facts, thorough):
    git = env.find_tool("git")
    if git is None:
        return Check("build-git", WARNING, "git is not installed: `ortprof build` cannot fetch ORT sources",
                     env.install_command({"debian": "git", "fedora": "git", "arch": "git",
                                          "alpine": "git", "suse": "git"}))
    version, error = env.tool_version(git)
    return Check("build-git", OK if version else WARNING, f"{git}: {version or error}",
                 "" if version else "reinstall git")


def check_build_cmake(facts, thorough):
    fix = f"{sys.executable} -m pip install 'cmake>={MIN_CMAKE[0]}.{MIN_CMAKE[1]}'"
    candidates = []
    for path in {env.find_tool("cmake"), os.path.join(os.path.dirname(sys.executable), "cmake")}:
        if path and os.access(path, os.X_OK):
            line, _ = env.tool_version(path)
            if line and _version_tuple(line):
                candidates.append((_version_tuple(line), path))
    if not candidates:
        return Check("build-cmake", WARNING, "cmake is not installed: `ortprof build` needs it", fix)
    version, path = max(candidates)
    shown = ".".join(map(str, version))
    if version < MIN_CMAKE:
        return Check("build-cmake", WARNING,
                     f"{path}: cmake {shown} is older than {MIN_CMAKE[0]}.{MIN_CMAKE[1]}, the minimum of current "
                     "ONNX Runtime sources (older ORT releases accept it)", fix)
    return Check("build-cmake", OK, f"{path}: cmake {shown}")


def check_build_compiler(facts, thorough):
    fix = env.install_command({"debian": "build-essential", "fedora": "gcc gcc-c++ make",
                               "arch": "base-devel", "alpine": "build-base", "suse": "gcc-c++ make"})
    found = {}
    for role, names in (("C++", ("c++", "g++", "clang++")), ("C", ("cc", "gcc", "clang"))):
        path = next((p for p in map(env.find_tool, names) if p), None)
        if path is None:
            return Check("build-compiler", WARNING, f"no {role} compiler found ({', '.join(names)})", fix)
        version, error = env.tool_version(path)
        if version is None:
            return Check("build-compiler", WARNING, f"{path} does not run: {error}", fix)
        found[role] = f"{path} ({version})"
    return Check("build-compiler", OK, f"C++ {found['C++']}; C {found['C']}")


def check_build_ninja(facts, thorough):
    ninja = env.find_tool("ninja")
    if ninja is None:
        return Check("build-ninja", WARNING, "ninja is not installed: builds fall back to make (slower rebuilds)",
                     env.install_command({"debian": "ninja-build", "fedora": "ninja-build", "arch": "ninja",
                                          "alpine": "samurai", "suse": "ninja"})
                     + f" (or {sys.executable} -m pip install ninja)")
    version, error = env.tool_version(ninja)
    return Check("build-ninja", OK, f"{ninja}: ninja {version or error}")


def check_build_python_headers(facts, thorough):
    include = sysconfig.get_paths().get("include") or ""
    header = os.path.join(include, "Python.h")
    if os.path.exists(header):
        return Check("build-python-headers", OK, header)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Check("build-python-headers", WARNING,
                 f"no Python.h in {include}: ORT's Python binding cannot be compiled for this Python",
                 env.install_command({"debian": f"python{version}-dev", "fedora": f"python{version}-devel",
                                      "arch": "python", "alpine": "python3-dev", "suse": "python3-devel"}))


def check_build_disk(facts, thorough, build_root="build"):
    from .builder.preflight import DISK_GIB   # build's own threshold: one number per --config
    config = "Debug"    # `ortprof build`'s default --config
    need = DISK_GIB[config]
    path = os.path.abspath(build_root)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    free = shutil.disk_usage(path).free
    detail = f"{free / (1 << 30):.1f} GiB free under {os.path.abspath(build_root)}"
    if free < need << 30:
        sizes = ", ".join(f"{name} {gib}" for name, gib in DISK_GIB.items())
        return Check("build-disk", WARNING,
                     f"only {detail}; a {config} build needs about {need} GiB (GiB per --config: {sizes})",
                     "free disk space, or build on a larger disk with `ortprof build --build-root DIR`")
    return Check("build-disk", OK, f"{detail}; a {config} build needs about {need} GiB")


# -- running ---------------------------------------------------------------------------
# id -> (label, check function, slow in thorough mode)
CHECKS = {
    "perf": ("perf installed", check_perf, False),
    "perf-permission": ("perf permitted", check_perf_permission, False),
    "perf-dwarf": ("perf dwarf sampling", check_perf_dwarf, True),
    "futex-tracepoints": ("futex tracepoints", check_futex_tracepoints, True),
    "futex-bpf": ("futex counting in BPF", check_futex_bpf, True),
    "sched-bpf": ("scheduler events in BPF", check_sched_bpf, False),
    "uprobes": ("uprobes (C API calls)", check_uprobes, True),
    "py-spy": ("py-spy attach", check_pyspy, True),
    "attach": ("record --pid: attach", check_attach, False),
    "container": ("container", check_container, False),
    "cgroup": ("cgroup / --cpus", check_cgroup, False),
    "onnxruntime": ("onnxruntime", check_onnxruntime, True),
    "cpu": ("CPU", check_cpu, False),
    "build-git": ("git", check_build_git, False),
    "build-cmake": ("cmake", check_build_cmake, False),
    "build-compiler": ("C/C++ compiler", check_build_compiler, False),
    "build-ninja": ("ninja", check_build_ninja, False),
    "build-python-headers": ("Python headers", check_build_python_headers, False),
    "build-disk": ("disk for builds", check_build_disk, False),
}


def run_checks(subset=None, thorough=None):
    """Run checks (all, or the ids in `subset`, in CHECKS order) and return
    [Check]. `thorough` (default: only when running all checks) adds the real
    recording tests; without it every check takes milliseconds."""
    if subset is None:
        ids = list(CHECKS)
    else:
        unknown = [name for name in subset if name not in CHECKS]
        if unknown:
            raise InputError(f"unknown doctor check {', '.join(unknown)}; known: {', '.join(CHECKS)}")
        ids = [name for name in CHECKS if name in subset]
    if thorough is None:
        thorough = subset is None
    facts = Facts()
    facts.container  # noqa: B018 - computed once here rather than racing in threads

    def run(name):
        try:
            return CHECKS[name][1](facts, thorough)
        except OrtprofError as exc:
            return Check(name, FAIL, str(exc), f"run `ortprof doctor --check {name}` again; "
                                               "if it keeps failing, report it as a bug")

    if not thorough:
        return [run(name) for name in ids]
    # The slow checks spawn processes that mostly wait; run them side by side.
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(run, ids))


def require(ids):
    """Quick checks for a command about to start: raise EnvironmentProblem with
    the first failure's detail and fix; return the checks (warnings included)
    otherwise."""
    checks = run_checks(ids, thorough=False)
    for check in failures(checks):
        raise EnvironmentProblem(f"{check.detail}; fix: {check.fix}" if check.fix else check.detail)
    return checks


def require_perf(futex=True):
    """What `record` runs before choosing perf: raises EnvironmentProblem unless
    perf may sample a child with dwarf call graphs; returns the checks, whose
    "futex-tracepoints" (when `futex`) is a warning when perf cannot record them."""
    return require(list(SAMPLES.checks) + (["futex-tracepoints"] if futex else []))


def require_pyspy():
    """What `record` runs before choosing py-spy: present, and allowed to read
    another process (ptrace scope, CAP_SYS_PTRACE, seccomp)."""
    return require(["py-spy"])


def to_json(checks):
    return {"schema": SCHEMA, "checks": [check.to_json() for check in checks]}


def render(checks, console):
    """The terminal view: a table, then the fix for everything not ok."""
    from rich.table import Table
    from rich.text import Text

    styles = {OK: "green", WARNING: "yellow", FAIL: "bold red"}
    table = Table(title="ortprof doctor", title_justify="left", show_lines=False)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for check in checks:
        table.add_row(check.id, Text(check.status, style=styles[check.status]), check.detail)
    console.print(table)
    for check in checks:
        if check.status != OK and check.fix:
            console.print(Text.assemble(("fix ", styles[check.status]), (f"{check.id}: ", "bold"), check.fix))
    counts = {status: sum(c.status == status for c in checks) for status in (OK, WARNING, FAIL)}
    console.print(f"{counts[OK]} ok, {counts[WARNING]} warning(s), {counts[FAIL]} failed")


def _last_line(text):
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
