"""Exact futex counts and times per thread, aggregated in the kernel by a BPF program: the
compiled one (sched/compiled, libbpf) when it is built, else this bpftrace program (same logic,
same output lines).

perf's per-call tracepoints copy a stack and write a record for every futex call:
with spinning off a service makes ~1000 a second and that costs latency. Here the
kernel only adds to per-(thread, wait|wake) counters; bpftrace prints them once a
second (so a killed bpftrace still leaves all but the last second) and at exit.
Stacks come separately, from a sample of the calls (perf's tracepoint with a period).

The program starts before the workload does: compiling and attaching takes
~0.4 s of CPU, which on a busy machine would slow the workload's first requests.
The recorder then names the process to count (TARGET_MARK, its pid) and marks
the profiling window (WINDOW_MARK) by calling getpriority() with a `which` no
program uses; the program counts only the target's calls that enter inside the
window, and time blocked clipped to it. Both sides read CLOCK_MONOTONIC (bpftrace's
nsecs, Python's time.monotonic, perf -k mono), so run.json's window is the counters'.
"""
import os
import time
from pathlib import Path

from ...errors import EnvironmentProblem

FUTEX_BPF_OUT = "futex-bpf.jsonl"    # bpftrace -f json output, one JSON object a line
FUTEX_BPF_LOG = "futex-bpf.log"
FUTEX_BPF_SCRIPT = "futex.bt"
WINDOW_MARK = 0x4F5254               # "ORT": getpriority(which=WINDOW_MARK, who=1 open / 0 close)
TARGET_MARK = WINDOW_MARK + 1        # getpriority(which=TARGET_MARK, who=pid): count that process
ATTACHED_LINE = "ortprof-futex-attached"
END_LINE = "ortprof-futex-end"
ATTACH_TIMEOUT = 30.0                # compiles in ~0.3-0.5 s on an idle 2-core machine
WAIT_OPS = (0, 9, 6, 11)             # FUTEX_WAIT, WAIT_BITSET, LOCK_PI, WAIT_REQUEUE_PI (as accumulator.py)

# $1: the recorder's pid (who may name the target and mark the window).
# @target: the counted process (tgid) in its low 32 bits, bit 32 set while the
# window is open; the close sets it to 0, so nothing runs for the target's calls
# after. @start[tid]: the call in flight, packed as entry time * 4 + 2 if it entered
# inside the window + 1 for a wait (blocks; 0: a wake). A call that entered inside
# the window is counted when it exits (@t: count and total time per thread and
# kind); one that entered before adds only its time inside the window (@before).
# Calls still in flight at the close stay in @start, printed at exit: the reader
# counts them and their time up to the close.
# The program runs on every futex call of the target (thousands a second with
# spinning off) and its cost is mostly hash-map operations (docs/benchmarks.md):
# one lookup of @target, one update and one delete of @start, one aggregate.
SCRIPT = """\
BEGIN { printf("%s\\n"); }
tracepoint:syscalls:sys_enter_getpriority /pid == $1 && args->which == %d/ {
  if (args->who == 1) { @window_open_ns = nsecs; @window_close_ns = 0; @target = (@target & 0xffffffff) | (1 << 32); }
  else { @window_close_ns = nsecs; @target = 0; }
}
tracepoint:syscalls:sys_enter_getpriority /pid == $1 && args->which == %d/ { @target = (uint64)args->who; }
tracepoint:syscalls:sys_enter_futex {
  $target = (uint64)@target;
  if (($target & 0xffffffff) == pid) {
    $op = args->op & 0x7f;
    @start[tid] = (nsecs << 2) | (($target >> 32) << 1) | ((%s) ? 1 : 0);
  }
}
tracepoint:syscalls:sys_exit_futex {
  $target = (uint64)@target;
  if (($target & 0xffffffff) == pid) {
    $entered = @start[tid];
    if ($entered != 0) {
      if ($entered & 2) { @t[tid, $entered & 1] = stats(nsecs - ($entered >> 2)); }
      else if ($target >> 32) { @before[tid, $entered & 1] = sum(nsecs - (uint64)@window_open_ns); }
      delete(@start[tid]);
    }
  }
}
interval:s:1 { print(@t); print(@before); print(@window_open_ns); print(@window_close_ns); }
END { printf("%s\\n"); }
""" % (ATTACHED_LINE, WINDOW_MARK, TARGET_MARK, " || ".join(f"$op == {op}" for op in WAIT_OPS), END_LINE)


def write_script(path, extra=""):
    """The program, with `extra` probes appended (the sched signal's, sharing @target and @start)."""
    with open(path, "w") as stream:
        stream.write(SCRIPT + extra)
    return str(path)


def bpftrace_command(bpftrace, script, output, recorder_pid=None):
    return [bpftrace, "-f", "json", "-o", str(output), str(script), str(recorder_pid or os.getpid())]


def _mark(which, who):
    # getpriority() with an invalid `which` does nothing but fail with EINVAL;
    # the tracepoint sees its arguments first.
    try:
        os.getpriority(which, who)
    except OSError:
        pass


def mark_window(opening):
    """Tell the BPF program the window opens (or closes) now."""
    _mark(WINDOW_MARK, 1 if opening else 0)


def set_target(pid):
    """Count the futex calls of process `pid` from now on (and no longer the previous one's)."""
    _mark(TARGET_MARK, pid)


def start_futex_counter(bpftrace, directory, timeout=ATTACH_TIMEOUT, extra=""):
    """Start the counting program, its files in `directory`; it counts nothing until
    set_target() names a process. Returns (ProfilerProcess named "bpftrace", seconds
    it took to attach). Raises EnvironmentProblem with bpftrace's own words when it
    does not attach."""
    directory = Path(directory)
    script = write_script(directory / FUTEX_BPF_SCRIPT, extra)
    output = directory / FUTEX_BPF_OUT
    return _start_counter("bpftrace", bpftrace_command(bpftrace, script, output), directory, timeout)


def start_compiled_counter(loader, directory, sched, timeout=ATTACH_TIMEOUT):
    """As start_futex_counter, with the compiled program (sched/compiled: the same output
    file and lines), following the scheduler too when `sched`."""
    from ..sched.compiled import LOADER_NAME, loader_command
    directory = Path(directory)
    return _start_counter(LOADER_NAME, loader_command(loader, directory / FUTEX_BPF_OUT, os.getpid(), sched),
                          directory, timeout)


def _start_counter(name, argv, directory, timeout):
    from ...recording.profilers import ProfilerProcess
    output = directory / FUTEX_BPF_OUT
    try:
        output.unlink()     # a previous program's attached line must not be taken for this one's
    except FileNotFoundError:
        pass
    counter = ProfilerProcess(name, argv, str(directory / FUTEX_BPF_LOG), str(output)).start()
    seconds = wait_attached(counter.process, output, timeout)
    if seconds is None:
        exited = counter.process.poll() is not None
        counter.stop(timeout=10)
        what = f"{name} exited with code {counter.exit_code}" if exited else \
            f"{name} did not attach within {timeout:g} s"
        raise EnvironmentProblem(f"{what}: {bpftrace_complaint(counter.log_tail(20))}")
    return counter, seconds


def bpftrace_complaint(log):
    """bpftrace's ERROR line (its warnings, e.g. about RLIMIT_MEMLOCK on kernels that
    account BPF memory to cgroups, are harmless), else the log's last line."""
    lines = [line.strip() for line in (log or "").replace(" | ", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR") and "RLIMIT_MEMLOCK" not in line]
    return (errors or lines or ["no output"])[-1]


def wait_attached(process, output, timeout=ATTACH_TIMEOUT):
    """Seconds until bpftrace ran BEGIN (after every probe is attached), or None
    when it exited or did not get there within `timeout`."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        try:
            with open(output) as stream:
                if ATTACHED_LINE in stream.read():
                    return time.monotonic() - started
        except FileNotFoundError:
            pass
        if process.poll() is not None:
            return None
        time.sleep(0.01)
    return None
