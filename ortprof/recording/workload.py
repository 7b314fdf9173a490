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


def _tee(source, sinks):
    """Copy a child's stream to the terminal and the log, chunk by chunk."""
    while True:
        chunk = os.read(source.fileno(), 65536)
        if not chunk:
            break
        for sink in sinks:
            try:
                sink.write(chunk)
                sink.flush()
            except (OSError, ValueError):
                pass


class Workload:
    def __init__(self, argv, env, log_path, preexec=None):
        self.argv = argv
        self.log = open(log_path, "ab")
        try:
            # New session: Ctrl+C goes to ortprof, which stops profilers first, then this.
            self.process = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, preexec_fn=preexec)
        except OSError as exc:
            self.log.close()
            raise InputError(f"{argv[0]}: cannot start ({exc.strerror or exc})")
        self.pid = self.process.pid
        self.stopped_by_ortprof = False
        self._tees = [
            threading.Thread(target=_tee, args=(self.process.stdout, [sys.stdout.buffer, self.log]), daemon=True),
            threading.Thread(target=_tee, args=(self.process.stderr, [sys.stderr.buffer, self.log]), daemon=True),
        ]
        for tee in self._tees:
            tee.start()

    def running(self):
        return self.process.poll() is None

    def stop(self):
        """SIGINT, then SIGTERM, then SIGKILL to the workload's process group."""
        for signum, grace in STOP_SIGNALS:
            if not self.running():
                break
            self.stopped_by_ortprof = True
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
        for tee in self._tees:
            tee.join(timeout=2)
        self.log.close()
        return code
