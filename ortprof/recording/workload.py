"""Launching the workload (argv, never a shell), teeing its output, stopping it."""
import os
import shutil
import signal
import subprocess
import sys
import threading

from ..errors import InputError

STOP_SIGNALS = ((signal.SIGINT, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0))


def resolve_executable(argv):
    """Refuse a command that cannot start, with one line, before anything runs."""
    if not argv:
        raise InputError("no command given: ortprof record [OPTIONS] -- CMD [ARGS...]")
    program = argv[0]
    if os.sep in program:
        if not os.path.exists(program):
            raise InputError(f"{program}: no such file")
        if not os.access(program, os.X_OK):
            raise InputError(f"{program}: not executable")
        return program
    found = shutil.which(program)
    if found is None:
        raise InputError(f"{program}: command not found")
    return found


def _tee(source, terminal, log, quiet):
    """Copy a child's stream to the terminal and the log, chunk by chunk. Once `quiet` is set
    (ortprof stopped the workload) only the log gets it: the workload's KeyboardInterrupt
    traceback is not ortprof's error to show."""
    while True:
        chunk = os.read(source.fileno(), 65536)
        if not chunk:
            break
        for sink in (log,) if quiet.is_set() else (terminal, log):
            try:
                sink.write(chunk)
                sink.flush()
            except (OSError, ValueError):
                pass


def log_tail(path, lines=3):
    """The last non-empty lines of a log, joined on one line (for one-line errors)."""
    try:
        with open(path, errors="replace") as stream:
            text = [line.strip() for line in stream if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class Workload:
    """The profiled (or swept) process: own session, so a terminal Ctrl+C reaches
    ortprof only, which then stops profilers first and this last.

    tee=True shows its output and saves it to `log_path`; tee=False only saves it
    (a sweep runs it many times and keeps stdout for its own table or JSON);
    stdout_to_stderr keeps ortprof's stdout for its own --json."""

    def __init__(self, argv, env, log_path, preexec=None, tee=True, stdout_to_stderr=False):
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, "ab")
        pipe_or_log = subprocess.PIPE if tee else self.log
        try:
            self.process = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=pipe_or_log,
                stderr=subprocess.PIPE if tee else subprocess.STDOUT, start_new_session=True,
                preexec_fn=preexec)
        except OSError as exc:
            self.log.close()
            raise InputError(f"{argv[0]}: cannot start ({exc.strerror or exc})")
        self.pid = self.process.pid
        self.stopped_with = None   # the signal ortprof stopped it with, if it did
        self._quiet = threading.Event()
        self._tees = []
        if tee:
            self._tees = [
                threading.Thread(target=_tee, args=(self.process.stdout, sys.stderr.buffer if stdout_to_stderr
                                                    else sys.stdout.buffer, self.log, self._quiet), daemon=True),
                threading.Thread(target=_tee, args=(self.process.stderr, sys.stderr.buffer, self.log, self._quiet),
                                 daemon=True),
            ]
        for thread in self._tees:
            thread.start()

    @property
    def stopped_by_ortprof(self):
        return self.stopped_with is not None

    def running(self):
        return self.process.poll() is None

    def exit_code(self):
        return self.process.poll()

    def stop(self):
        """SIGINT, then SIGTERM, then SIGKILL to the workload's process group; its exit code."""
        for signum, grace in STOP_SIGNALS:
            if not self.running():
                break
            self.stopped_with = signal.Signals(signum).name
            self._quiet.set()
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
        return self.finish()

    def finish(self):
        code = self.process.wait()
        for thread in self._tees:
            thread.join(timeout=2)
        if not self.log.closed:
            self.log.close()
        return code

    def log_tail(self, lines=3):
        return log_tail(self.log_path, lines)
