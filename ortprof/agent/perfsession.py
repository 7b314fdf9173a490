"""One `perf record` per followed process, kept across windows.

Starting perf costs ~0.2 s of CPU whatever it records (it reads /proc/kallsyms
several times), a third of a window's cost when paid every window. So the agent
starts perf once per process with its events disabled (`-D -1`), turns them on
and off for each window through perf's control fifo (`--control fifo:ctl,ack`)
and cuts the window's perf.data with SIGUSR2 (`--switch-output=signal`): perf
finishes the file, renames it `perf.data.<timestamp>` and goes on in a new one.

A cut costs ~0.08 s (perf re-reads /proc/kallsyms to describe the kernel in the
new file), so there is one per window, at its end. Mappings made between windows
still reach the next window's file: once enabled, perf's side-band (dummy) event
keeps tracking mmaps while the sampling events are off.

A native client's perf also records the C API uprobe events the agent added for its
library (agent/capi.py). `enable` and `disable` switch them with the samples, but a
uprobe's breakpoint is in the process from the moment perf opens the event until perf
exits: the trap is paid on every probed call, between windows too; only the recording
of the event stops.
"""
import os
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import EnvironmentProblem
from ..recording import profilers
from ..recording.workload import log_tail

START_TIMEOUT = 10.0     # perf's start-up (parsing kallsyms, opening one event per thread) on a busy node
COMMAND_TIMEOUT = 5.0
CUT_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
ACK = b"ack\n"
DATA = "perf.data"


class PerfSession:
    """`perf record -D -1 --control fifo:... --switch-output=signal -p PID`, owned by the agent
    while it follows the process. Raw data lives in `self.directory` only until `cut()` hands a
    window's file over."""

    def __init__(self, target, options, perf, work_dir, futex=False, probe_events=()):
        self.target = target
        self.directory = Path(tempfile.mkdtemp(prefix=f"perf-{target.pid}-", dir=os.path.abspath(work_dir)))
        self.ctl_path, self.ack_path = self.directory / "ctl", self.directory / "ack"
        os.mkfifo(self.ctl_path, 0o600)
        os.mkfifo(self.ack_path, 0o600)
        self.log_path = self.directory / "perf.log"
        argv = profilers.perf_command(perf, target.pid, str(self.directory / DATA), options.frequency,
                                      "dwarf", options.stack_size, futex=futex)
        # --no-buildid: no build-id pass at each cut (a second read of all samples, ~0.1 s CPU a
        # window); each window is decoded right away, while the mapped files are the profiled ones.
        argv[argv.index("record") + 1:argv.index("record") + 1] = [
            "--no-buildid", "-D", "-1", "--control", f"fifo:{self.ctl_path},{self.ack_path}",
            "--switch-output=signal"]
        # The C API uprobes of a native client (agent/capi.py): recorded with the samples, on and
        # off with them, without a call graph (an 8 KB stack copy per call is not needed).
        self.probe_events = list(probe_events)
        pid_at = argv.index("-p")
        argv[pid_at:pid_at] = [argument for event in self.probe_events
                               for argument in ("-e", f"{event}/call-graph=no/")]
        self.argv = argv
        self.process = None
        self.ctl_fd = self.ack_fd = None
        self.windows = 0            # windows this perf recorded
        self.started_mono = None

    # -- life ------------------------------------------------------------------------------
    def start(self):
        # Both ends read-write: opening a fifo this way never blocks, whether perf is up or not.
        self.ctl_fd = os.open(self.ctl_path, os.O_RDWR | os.O_CLOEXEC)
        self.ack_fd = os.open(self.ack_path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        with open(self.log_path, "wb") as log:
            try:
                # Own session: a terminal's Ctrl+C reaches the agent only, which stops perf in order.
                self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
            except FileNotFoundError:
                raise EnvironmentProblem(f"{self.argv[0]}: not found")
        self.started_mono = time.monotonic()
        return self

    def running(self):
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines=5):
        return log_tail(str(self.log_path), lines)

    @property
    def exit_code(self):
        return None if self.process is None else self.process.poll()

    def close(self):
        """Stop perf (SIGINT: it finishes its file) and delete everything it wrote."""
        if self.process is not None:
            profilers.interrupt(self.process, STOP_TIMEOUT)
        for fd in (self.ctl_fd, self.ack_fd):
            if fd is not None:
                os.close(fd)
        self.ctl_fd = self.ack_fd = None
        for path in self.directory.iterdir() if self.directory.exists() else ():
            path.unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:
            pass

    # -- control -----------------------------------------------------------------------------
    def command(self, word, timeout=COMMAND_TIMEOUT):
        """Send `word` to perf's control fifo; True once perf acknowledged it."""
        if not self.running():
            return False
        try:
            os.read(self.ack_fd, 4096)   # a late ack of a command that timed out must not answer this one
        except BlockingIOError:
            pass
        os.write(self.ctl_fd, word.encode() + b"\n")
        received = b""
        deadline = time.monotonic() + timeout
        while ACK not in received:
            left = deadline - time.monotonic()
            if left <= 0 or not self.running():
                return False
            ready, _, _ = select.select([self.ack_fd], [], [], min(left, 0.1))
            if ready:
                try:
                    received += os.read(self.ack_fd, 64)
                except BlockingIOError:
                    pass
        return True

    def begin(self):
        """Enable the events for a window; False when perf is not there to do it."""
        timeout = START_TIMEOUT if not self.windows else COMMAND_TIMEOUT
        if not self.command("enable", timeout):
            if self.running():        # perf does not answer: end it, the next window starts another
                self.process.kill()
                self.process.wait()
            return False
        self.windows += 1
        return True

    def end(self):
        """Disable the events (the window's last samples are in perf's buffers or file)."""
        return self.command("disable")

    def cut(self, timeout=CUT_TIMEOUT):
        """The finished file of what perf wrote since the last cut (perf goes on in a new one),
        or, when perf has exited (the process is gone), its last file. None if there is none."""
        before = set(self.directory.glob(f"{DATA}.*"))
        if self.running():
            self.process.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.running():
                if set(self.directory.glob(f"{DATA}.*")) - before:   # renamed once complete
                    break
                time.sleep(0.01)
        if not self.running() and self.process is not None:
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        new = sorted(set(self.directory.glob(f"{DATA}.*")) - before)
        for extra in new[:-1]:
            extra.unlink(missing_ok=True)
        return new[-1] if new else None

    def describe(self, window_file):
        from ..model.manifest import ProfilerRun
        size = window_file.stat().st_size if window_file is not None and window_file.exists() else 0
        notes = [f"perf record kept across windows (window {self.windows} of this perf)"]
        if self.probe_events:
            notes.append(f"with {len(self.probe_events)} C API uprobe events")
        return ProfilerRun(command=list(self.argv), output=DATA, exit_code=self.exit_code, bytes=size, notes=notes)


def stale_sessions(work_dir):
    """perf processes a killed agent left recording into `work_dir` (their pids)."""
    import psutil
    prefix = os.path.join(os.path.abspath(work_dir), "perf-")
    stale = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if process.info.get("name") == "perf" and any(arg.startswith(f"fifo:{prefix}") for arg in cmdline):
            stale.append(process.pid)
    return stale
