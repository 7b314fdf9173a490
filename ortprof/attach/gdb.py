"""Run a Python expression inside another CPython process, at a safe point, through gdb.

The safe point is the entry of PyEval_SaveThread: a thread calls it holding the GIL, in a
consistent interpreter state, right before letting other threads run Python code (pybind11
calls it in every ORT run(), as do time.sleep and any blocking I/O). Running code there is what
another thread could do at that moment. gdb stops the process, puts a breakpoint there (its
condition: the thread's interpreter is the main one) and lets the process run until a thread
stops on it; then, with the breakpoint deleted, it calls into the interpreter:

    PyMem_RawMalloc (the expression's bytes, copied in by gdb's `restore` from a file in a 0700
    directory of ours, and room for three pointers), PyErr_Fetch (the thread's pending exception,
    if any, is kept aside), PyDict_New + PyDict_SetItemString(globals, "__builtins__",
    PyEval_GetBuiltins()), PyRun_String(expression, Py_eval_input, globals, globals),
    PyUnicode_AsUTF8 (the value, printed by gdb), Py_DecRef, PyErr_Restore, PyMem_RawFree

and detaches. Only exported CPython API functions are used, called at the addresses ortprof
computed from the ELF dynamic symbol table of the file that defines them and the process's
memory map (target.py, which checks that the code in memory is the file's), their types spelled
out in each call: gdb needs no symbols at all (`--readnever`, no shared library's symbols read),
so neither debug information nor a Python that is not stripped.

ortprof drives gdb over a pipe (the CLI; each command is followed by an `echo` of a marker, so
ortprof knows when it is done). gdb runs in a session of its own: a Ctrl+C at the terminal does
not reach it. To give up while gdb waits for the safe point (timeout, Ctrl+C, SIGTERM of
ortprof), ortprof sends gdb SIGTERM: gdb stops the process, removes the breakpoint and
detaches. Nothing is sent once the breakpoint was hit: gdb quitting during a call would detach
with the call's return address pointing at its own breakpoint, and the process would crash
when the call returned. From then until gdb detached, ortprof holds SIGINT and SIGTERM back.
"""
import contextlib
import os
import re
import select
import signal
import subprocess
import tempfile
import threading
import time

from ..errors import InputError, OrtprofError

# Exported by every CPython 3.9+ that can load extension modules (its executable or libpython).
REQUIRED_SYMBOLS = ("PyEval_SaveThread", "PyMem_RawMalloc", "PyMem_RawFree", "PyErr_Fetch", "PyErr_Restore",
                    "PyErr_Clear", "PyDict_New", "PyDict_SetItemString", "PyEval_GetBuiltins", "PyRun_String",
                    "PyUnicode_AsUTF8", "Py_DecRef")
BUILTINS_KEY = b"__builtins__\0"   # copied in after the expression: globals get the builtins (3.7 and older
                                    # would run the expression with no builtins at all)
MAIN_INTERPRETER = ("PyInterpreterState_Get", "PyInterpreterState_Main")
PY_EVAL_INPUT = 258          # Include/compile.h, the same in every CPython 3

CALL_SECONDS = 60.0          # the expression's run inside the process (not interruptible: see above)
COMMAND_SECONDS = 10.0       # a command that does not call into the process

# Before attaching: every signal goes to the process as if gdb were not there (SIGINT too), so
# nothing but the breakpoint stops the wait for the safe point or a call.
SETTINGS = ("set auto-load off", "set auto-solib-add off", "set debuginfod enabled off", "set pagination off",
            "set confirm off", "set width 0", "set height 0", "set print thread-events off",
            "set breakpoint pending off", "set unwindonsignal on",
            "handle all nostop noprint pass", "handle SIGINT nostop noprint pass")

# At the safe point: one command list, so a failing step skips what depends on it.
CALLS = """set $ortprof_buf = ((char *(*)(unsigned long)) {PyMem_RawMalloc})({exc_offset} + 24)
set $ortprof_result = 0
if $ortprof_buf != 0
set $ortprof_exc = (void **) ($ortprof_buf + {exc_offset})
restore {path} binary $ortprof_buf
call ((void (*)(void **, void **, void **)) {PyErr_Fetch})($ortprof_exc, $ortprof_exc + 1, $ortprof_exc + 2)
set $ortprof_globals = ((void *(*)(void)) {PyDict_New})()
if $ortprof_globals != 0
call ((int (*)(void *, const char *, void *)) {PyDict_SetItemString})($ortprof_globals, $ortprof_buf + {key_offset}, ((void *(*)(void)) {PyEval_GetBuiltins})())
set $ortprof_result = ((void *(*)(const char *, int, void *, void *)) {PyRun_String})($ortprof_buf, {eval_input}, $ortprof_globals, $ortprof_globals)
if $ortprof_result != 0
printf "@@value %s@@end\\n", ((const char *(*)(void *)) {PyUnicode_AsUTF8})($ortprof_result)
call ((void (*)(void *)) {Py_DecRef})($ortprof_result)
else
echo @@raised@@\\n
call ((void (*)(void)) {PyErr_Clear})()
end
call ((void (*)(void *)) {Py_DecRef})($ortprof_globals)
end
call ((void (*)(void *, void *, void *)) {PyErr_Restore})($ortprof_exc[0], $ortprof_exc[1], $ortprof_exc[2])
end
if $ortprof_buf != 0
call ((void (*)(void *)) {PyMem_RawFree})($ortprof_buf)
end"""

ATTACH_REFUSED = ("ptrace: Operation not permitted", "Could not attach to process", "Can't attach to process")


class GdbError(OrtprofError):
    """gdb failed in a way that is not the user's to fix (an ortprof bug or a very odd process)."""


class SafePointTimeout(InputError):
    """No thread reached the safe point in time; the process was left as it was."""


class ProcessGone(InputError):
    pass


class CallStuck(OrtprofError):
    """The expression did not return within CALL_SECONDS; gdb was left to finish and detach."""


@contextlib.contextmanager
def shielded():
    """SIGINT and SIGTERM held back (on the main thread, where Python handles them) until the
    block ends: a Ctrl+C must not leave gdb half-way through its calls into the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Gdb:
    """One gdb, driven over a pipe. `send` writes commands (each followed by a marker); `wait`
    reads until a command's marker."""

    def __init__(self, gdb):
        self.buffer = b""
        self.count = 0
        self.process = subprocess.Popen(
            [gdb, "-nx", "-nw", "-q", "--readnever", *(arg for setting in SETTINGS for arg in ("-iex", setting))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "LC_ALL": "C", "LANG": "C", "TERM": "dumb"})

    def send(self, *commands):
        """Queue commands; returns the marker of the last one."""
        data = b""
        for command in commands:
            self.count += 1
            data += command.encode() + b"\necho \\n@@ortprof-" + str(self.count).encode() + b"@@\\n\n"
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except OSError as exc:
            raise GdbError(f"gdb exited: {self.tail()}") from exc
        return self.count

    def wait(self, number, timeout):
        """The output up to command `number`'s marker (prompts removed); TimeoutError after
        `timeout` s (the command may still run), GdbError when gdb exits."""
        marker = f"@@ortprof-{number}@@".encode()
        deadline = time.monotonic() + timeout
        poller = select.poll()          # not select(): in the agent, descriptors go above FD_SETSIZE
        poller.register(self.process.stdout, select.POLLIN | select.POLLHUP)
        while marker not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(number)
            if not poller.poll(left * 1000):
                continue
            data = os.read(self.process.stdout.fileno(), 1 << 16)
            if not data:
                raise GdbError(f"gdb exited: {self.tail()}")
            self.buffer += data
        output, _, self.buffer = self.buffer.partition(marker)
        return re.sub(r"@@ortprof-\d+@@", "", output.decode(errors="replace").replace("(gdb) ", "")).strip()

    def run(self, command, timeout=COMMAND_SECONDS):
        return self.wait(self.send(command), timeout)

    def tail(self, lines=6):
        text = self.buffer.decode(errors="replace").replace("(gdb) ", "")
        return " | ".join(re.sub(r"@@ortprof-\d+@@", "", text).strip().splitlines()[-lines:])

    def interrupt(self, grace=10.0):
        """Give up while gdb waits (never during a call): SIGTERM makes gdb stop the process, remove
        its breakpoint and detach. True when gdb exited."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            return False
        finally:
            self._close_pipes()
        return True

    def detach(self):
        try:
            self.run("detach")
            self.process.stdin.write(b"quit\n")
            self.process.stdin.close()
            self.process.wait(COMMAND_SECONDS)
        except (TimeoutError, GdbError, OSError, subprocess.TimeoutExpired):
            self.interrupt()     # the process is stopped and no call runs: gdb detaches on SIGTERM
        self._close_pipes()

    def leave(self):
        """A call is stuck: queue detach and quit after it and let gdb finish on its own."""
        try:
            self.process.stdin.write(b"detach\nquit\n")
            self.process.stdin.close()
        except OSError:
            pass

    def _close_pipes(self):
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


def attach_refused(output):
    """The line of gdb's attach output that says ptrace refused, or None."""
    for line in output.splitlines():
        if any(marker in line for marker in ATTACH_REFUSED):
            return line.strip()
    return None


def run_at_safe_point(gdb_path, pid, expression, timeout, on_refused, functions, timings=None, before_detach=None):
    """Evaluate the Python `expression` (its value a str) in process `pid` at a safe point and
    return that str.

    `timeout` bounds gdb's start and attach and the wait for the safe point (SafePointTimeout:
    the process was left as it was). The call is not interruptible (CallStuck after
    CALL_SECONDS; gdb detaches on its own when it returns). `on_refused(gdb's line)` makes the
    error raised when ptrace is refused. `functions`: the address in the process of each of
    REQUIRED_SYMBOLS (and of MAIN_INTERPRETER's, when there: the breakpoint's condition, else it
    has none: 3.8). `timings` (a dict) gets the
    phases' seconds. `before_detach(value)` runs while the process is still stopped, after the
    call; from the safe point until gdb detached, SIGINT and SIGTERM wait (shielded())."""
    timings = timings if timings is not None else {}
    started = time.monotonic()
    deadline = started + timeout
    workdir = tempfile.mkdtemp(prefix="ortprof-attach-", dir=_plain_tmp())   # 0700, ortprof's user's
    path = os.path.join(workdir, "expression")
    data = expression.encode() + b"\0" + BUILTINS_KEY
    with open(path, "wb") as stream:
        stream.write(data)
    gdb = None
    try:
        gdb = Gdb(gdb_path)
        gdb.run("echo", max(1.0, deadline - time.monotonic()))
        timings["gdb_start_s"] = round(time.monotonic() - started, 4)
        attaching = time.monotonic()
        output = gdb.run(f"attach {pid}", max(1.0, deadline - time.monotonic()))
        refused = attach_refused(output)
        if refused or "ptrace: No such process" in output or f"process {pid}" not in output:
            if not os.path.exists(f"/proc/{pid}"):
                raise ProcessGone(f"pid {pid}: the process exited")
            raise on_refused(refused or (output.splitlines() or ["gdb could not attach"])[-1])
        address = {name: hex(value) for name, value in functions.items()}
        condition = ""
        if all(name in address for name in MAIN_INTERPRETER):
            condition = (f" if ((void *(*)(void)) {address['PyInterpreterState_Get']})() == "
                         f"((void *(*)(void)) {address['PyInterpreterState_Main']})()")
        set_up = gdb.send(f"break *{address['PyEval_SaveThread']}{condition}")
        waited = gdb.send("continue")
        try:
            output = gdb.wait(set_up, max(0.1, deadline - time.monotonic()))
            timings["stopped_before_wait_s"] = round(time.monotonic() - attaching, 4)
            if "Breakpoint 1 at" not in output:
                gdb.interrupt()
                raise GdbError(f"gdb: no breakpoint on PyEval_SaveThread in pid {pid}: {output[-300:]}")
            waiting = time.monotonic()
            output = gdb.wait(waited, max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            gdb.interrupt()
            raise SafePointTimeout(
                f"pid {pid}: no thread of its main interpreter released the GIL within {timeout:g} s (an idle "
                "process, or one running only pure Python code); it was left as it was. Try again while it "
                "serves requests, or with a longer timeout") from None
        if "Breakpoint 1," not in output:
            if not os.path.exists(f"/proc/{pid}") or "exited" in output or "terminated" in output:
                raise ProcessGone(f"pid {pid}: the process exited while ortprof waited to attach")
            gdb.interrupt()
            raise GdbError(f"gdb stopped pid {pid} elsewhere than at the safe point: {output[-300:]}")
        at_safe_point = time.monotonic()
        timings["wait_s"] = round(at_safe_point - waiting, 4)
        with shielded():
            calls = gdb.send("delete breakpoints",
                             CALLS.format(exc_offset=(len(data) + 7) // 8 * 8, key_offset=len(data) - len(BUILTINS_KEY), path=path, eval_input=PY_EVAL_INPUT, **address))
            try:
                output = gdb.wait(calls, CALL_SECONDS)
            except TimeoutError:
                gdb.leave()
                raise CallStuck(f"pid {pid}: ortprof's code has not returned after {CALL_SECONDS:g} s; gdb (pid "
                                f"{gdb.process.pid}) stays attached until it does, then detaches") from None
            timings["call_s"] = round(time.monotonic() - at_safe_point, 4)
            try:
                found = re.search(r"@@value (.*)@@end", output, re.S)
                if not found:
                    raise GdbError(f"gdb: no value from pid {pid}" +
                                   (": ortprof's code raised there (it should catch everything)"
                                    if "@@raised@@" in output else f": {output[-400:]}"))
                if before_detach is not None:
                    before_detach(found.group(1))
            finally:
                gdb.detach()
        timings["at_safe_point_s"] = round(time.monotonic() - at_safe_point, 4)
        timings["total_s"] = round(time.monotonic() - started, 4)
        return found.group(1)
    except TimeoutError:       # gdb's start or attach
        if gdb is not None:
            gdb.interrupt()
        raise GdbError(f"gdb did not start and attach to pid {pid} within {timeout:g} s") from None
    except BaseException:
        if gdb is not None and gdb.process.poll() is None and "at_safe_point" not in locals():
            gdb.interrupt()
        raise
    finally:
        try:
            os.unlink(path)
            os.rmdir(workdir)
        except OSError:
            pass


def _plain_tmp():
    """A temporary directory whose path gdb's `restore` takes as one word."""
    directory = tempfile.gettempdir()
    return directory if not re.search(r"\s", directory) else "/tmp"
