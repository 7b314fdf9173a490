"""The profilers ortprof drives: `perf record` and `py-spy record`.

Each is a small object: `command()` shows exactly what runs, `start(pid)`
launches it attached to the workload, `stop()` asks it to finish writing
(SIGINT, as a user's Ctrl+C would) and returns its exit code.
"""
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from ..environment import FUTEX_TRACEPOINTS
from ..errors import EnvironmentProblem
from .workload import log_tail

# Defaults chosen for low overhead on a service (see scripts/bench_record.py):
# ~200 Hz gives a few thousand samples in 10 s, enough to split spin from compute;
# 8 KiB of stack per sample reaches through ORT's frames into the Python caller.
DEFAULT_FREQUENCY = 199
DEFAULT_STACK_SIZE = 8192
# A futex call needs only the few frames above libc that decided to wait or wake:
# 2 KiB reaches them and costs a quarter of a CPU sample's copy (with spinning off
# a service makes thousands of futex calls a second).
FUTEX_STACK_SIZE = 2048
# With exact counts from the in-kernel counters (signals/futex/bpf.py), perf copies the stack
# of one futex call in this many: enough for the top caller paths (see
# scripts/bench_record.py for the cost).
FUTEX_STACK_PERIOD = 16


def interrupt(process, timeout):
    """SIGINT (perf and py-spy finish their files on it), SIGKILL after `timeout` s; True when killed."""
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True


@dataclass
class ProfilerProcess:
    name: str
    argv: list
    log_path: str
    output: str
    process: subprocess.Popen = None
    exit_code: int = None
    notes: list = field(default_factory=list)

    def start(self):
        log = open(self.log_path, "wb")
        try:
            # Own session: a terminal Ctrl+C reaches ortprof only, which stops us in order.
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError:
            raise EnvironmentProblem(f"{self.argv[0]}: not found")
        finally:
            log.close()
        return self

    def early_failure(self, wait=0.6):
        """The log tail when the profiler died right after starting, else None."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.exit_code = self.process.returncode
                return self.log_tail()
            time.sleep(0.05)
        return None

    def wait_until_recording(self, timeout=2.0):
        """Return once perf has its events open (or it died, or `timeout`)."""
        deadline = time.monotonic() + timeout
        fd_dir = f"/proc/{self.process.pid}/fd"
        while time.monotonic() < deadline:
            try:
                if any(os.readlink(os.path.join(fd_dir, fd)) == "anon_inode:[perf_event]" for fd in os.listdir(fd_dir)):
                    time.sleep(0.05)   # the rest of perf's events open and are enabled in the same burst
                    return
            except OSError:
                return
            time.sleep(0.01)

    def stop(self, timeout=60):
        if self.process is None:
            return None
        if interrupt(self.process, timeout):
            self.notes.append(f"{self.name} did not stop within {timeout}s and was killed")
        self.exit_code = self.process.returncode
        return self.exit_code

    def log_tail(self, lines=5):
        return log_tail(self.log_path, lines)

    def describe(self):
        from ..model.manifest import ProfilerRun
        size = os.path.getsize(self.output) if os.path.exists(self.output) else 0
        return ProfilerRun(command=list(self.argv), output=os.path.basename(self.output),
                           exit_code=self.exit_code, bytes=size, notes=list(self.notes))


def perf_command(perf, pid, output, frequency=DEFAULT_FREQUENCY, call_graph="dwarf",
                 stack_size=DEFAULT_STACK_SIZE, futex=True, futex_stack_period=None):
    """`futex_stack_period` N: the futex entry is a sampled event (one stack per N
    calls, counts come from elsewhere); None: every entry and exit is recorded."""
    # The frequency goes on the cpu-clock event itself: a global -F would put the
    # futex tracepoints in frequency mode too, and perf would keep ~1% of them.
    cpu_clock = f"cpu-clock/freq={frequency}/"
    sampled_futex = futex and futex_stack_period
    if sampled_futex:
        # A tracepoint records every call while its samples carry a period
        # (PERF_SAMPLE_PERIOD); --no-period drops that, so -c N keeps one call in N.
        # cpu-clock then states its period in ns (the kernel turns freq into exactly
        # this period anyway), which is also each sample's weight.
        cpu_clock = f"cpu-clock/period={round(1e9 / frequency)}/"
    argv = [perf, "record", "-o", output, "-k", "mono", "-e", cpu_clock,
            "--call-graph", f"dwarf,{stack_size}" if call_graph == "dwarf" else "fp"]
    if futex:
        # Stacks on entry say who waits; the exit needs only its timestamp.
        entry_stack = (f"call-graph=dwarf,stack-size={min(stack_size, FUTEX_STACK_SIZE)}" if call_graph == "dwarf"
                       else "call-graph=fp")
        enter, exit_ = FUTEX_TRACEPOINTS   # whether perf can: environment.perf_tracepoint_probe
        if sampled_futex:
            argv += ["--no-period", "-c", str(int(futex_stack_period)), "-e", f"{enter}/{entry_stack}/"]
        else:
            argv += ["-e", f"{enter}/{entry_stack}/", "-e", f"{exit_}/call-graph=no/"]
    return argv + ["-p", str(pid)]


def pyspy_command(pyspy, pid, output, rate=100):
    return [pyspy, "record", "--pid", str(pid), "--native", "--threads", "--format", "raw",
            "--rate", str(rate), "--output", output]   # --native needs blocking reads


def perf_permission_hint(log_tail):
    """Turn perf's start-up complaint into one line with the fix."""
    text = log_tail.lower()
    if "perf_event_paranoid" in text or "permission" in text or "not permitted" in text:
        return ("perf is not permitted to profile this process: run as root, or "
                "`sysctl -w kernel.perf_event_paranoid=1`; in a container add "
                "`--cap-add PERFMON --cap-add SYS_PTRACE` (or --privileged) / seccomp=unconfined")
    return f"perf record failed to start: {log_tail or 'no output'}"


def pyspy_permission_hint(log_tail):
    text = log_tail.lower()
    if "permission" in text or "ptrace" in text or "operation not permitted" in text:
        return ("py-spy is not permitted to read the process: run as root, or "
                "`sysctl -w kernel.yama.ptrace_scope=0`; in a container add `--cap-add SYS_PTRACE`")
    return f"py-spy failed to start: {log_tail or 'no output'}"
