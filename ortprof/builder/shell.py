"""Running build steps with their output in the log, and writing them as shell lines."""
import os
import shlex
import signal
import subprocess
from collections import deque

TAIL_LINES = 40


def shell_line(command, env=None, cwd=None):
    """One copy-pasteable shell line for `command` (env values may reference $PATH)."""
    parts = []
    if cwd is not None:
        parts.append(f"cd {shlex.quote(str(cwd))} &&")
    for key, value in (env or {}).items():
        # keep a leading/trailing $PATH expandable, quote the rest
        if key == "PATH" and value.endswith(":$PATH"):
            parts.append(f"{key}={shlex.quote(value[:-len(':$PATH')])}:\"$PATH\"")
        else:
            parts.append(f"{key}={shlex.quote(value)}")
    parts.append(shlex.join(str(arg) for arg in command))
    return " ".join(parts)


def expand_env(env):
    """Turn the `PATH=dir:$PATH` form used for display into a real environment."""
    real = dict(os.environ)
    for key, value in (env or {}).items():
        if key == "PATH" and value.endswith(":$PATH"):
            value = value[:-len("$PATH")] + os.environ.get("PATH", "")
        real[key] = value
    return real


class StepResult:
    def __init__(self, returncode, tail):
        self.returncode = returncode
        self.tail = tail           # last lines of output

    @property
    def ok(self):
        return self.returncode == 0

    def last_line(self):
        return next((line for line in reversed(self.tail) if line.strip()), "no output")


def run_logged(command, log, cwd=None, env=None, on_line=None):
    """Run `command`, copy every output line to `log` (and `on_line`), return a StepResult.

    On Ctrl-C the child (same process group) got SIGINT too; it is given time to
    stop, then killed, and KeyboardInterrupt propagates.
    """
    log.write(f"$ {shell_line(command, env, cwd)}\n")
    log.flush()
    tail = deque(maxlen=TAIL_LINES)
    process = subprocess.Popen([str(arg) for arg in command], cwd=cwd, env=expand_env(env),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            log.write(line + "\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)
        returncode = process.wait()
    except KeyboardInterrupt:
        _stop(process)
        log.write("--- interrupted ---\n")
        log.flush()
        raise
    finally:
        process.stdout.close()
    log.flush()
    return StepResult(returncode, list(tail))


def _stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGINT)   # a no-op if the terminal already sent it
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
