"""Attach the startup hook's recording to a Python process that already runs, and detach it.

    attachment = attach(pid, hook_dir)      # sessions found, run() timed from now on
    ...                                      # records arrive in hook_dir/hook-<pid>.jsonl
    result = attachment.detach()             # or detach(pid); the process is as it was

How (docs/attach.md has the whole story):
1. Checks, from /proc alone: the process exists, is CPython (its executable or a libpython it
   maps exports the C API), has onnxruntime loaded, and ptrace will be allowed (another tracer,
   Yama's ptrace_scope, another user without CAP_SYS_PTRACE); gdb is installed.
2. gdb attaches and runs one Python expression in the process at a safe point (gdb.py): it
   executes hookcore.py + payload.py in a fresh module, which finds the sessions that exist
   (their `session` records, what cannot be known now is null and named), patches the session
   class with the startup hook's wrappers, and answers with the numbers of a pipe and the
   address of a control block. While the process is still stopped, ortprof opens the pipe's
   read end through /proc/PID/fd (so records reach ortprof whatever the process's user or
   mount namespace) and writes the control block through /proc/PID/mem.
3. A thread of ortprof copies the records from the pipe to hook_dir/hook-<pid>.jsonl (<pid> as
   the process sees itself, like the startup hook's files) and renews the lease every second.
4. detach(): sets the control block's stop flag, and the process's next flush (the first
   run() a second after the previous one) restores the methods, writes a `detached` record
   and closes the pipe; when that does not come within COOPERATIVE_SECONDS, gdb runs the
   detach at a safe point. If ortprof dies without detaching (SIGKILL,
   OOM), the heartbeat stops and the process detaches itself at its first flush after the
   lease (15 s). attached() detaches on leaving the block, exceptions, Ctrl+C and SIGTERM.

The code run in the process never comes from a file it reads: gdb copies it into the process's
memory from a file in a 0700 directory of ortprof's user. Only processes that this user may
already ptrace can be attached to.
"""
import atexit
import contextlib
import json
import os
import select
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import EnvironmentProblem, InputError, OrtprofError
from . import gdb as gdb_driver
from . import target as target_checks
from .gdb import CallStuck, GdbError, ProcessGone, SafePointTimeout

__all__ = ["attach", "detach", "attached", "attachment_of", "Attachment", "DetachResult", "AlreadyAttached",
           "AttachTimeout", "payload_source", "ProcessGone", "CallStuck", "GdbError"]

DEFAULT_TIMEOUT = 10.0       # gdb's attach and the wait for a safe point
LEASE_SECONDS = 15.0         # the process detaches itself when the heartbeat stops for this long
HEARTBEAT_SECONDS = 1.0
COOPERATIVE_SECONDS = 2.0    # detach: how long the stop flag is given before gdb is used
MODULE_NAME = "_ortprof_attach"
_HERE = Path(__file__).resolve().parent

AttachTimeout = SafePointTimeout


class AlreadyAttached(InputError):
    """ortprof is in the process already: attached by another ortprof (`by`), or launched with
    the startup hook (`hook_dir`: where its records are, as the process names it)."""

    def __init__(self, message, by=None, hook_dir=None):
        super().__init__(message)
        self.by = by
        self.hook_dir = hook_dir


def payload_source():
    """The code run in the process: the startup hook's recording (hookcore.py), then payload.py."""
    return (_HERE / "hookcore.py").read_text() + "\n\n" + (_HERE / "payload.py").read_text()


def _attach_expression(arguments):
    return (f"(lambda m: (exec(compile({payload_source()!r}, '<ortprof attach>', 'exec'), m.__dict__), "
            f"m.attach({arguments!r}, m))[1])(__import__('types').ModuleType({MODULE_NAME!r}))")


DETACH_EXPRESSION = (f"(lambda m: m.detach('gdb') if m is not None else '{{\"ok\": true, \"attached\": false}}')"
                     f"(__import__('sys').modules.get({MODULE_NAME!r}))")


@dataclass
class DetachResult:
    pid: int
    status: str                       # detached | gone (the process exited) | pending (see `note`)
    how: Optional[str] = None         # run: a run() of its own did it; gdb: at a safe point; self: it had already
    why: Optional[str] = None         # what the process gave as the reason (stop requested, lease expired, ...)
    runs: Optional[int] = None        # run() calls it timed while attached
    dropped: Optional[int] = None     # records it could not write (ortprof too slow to read)
    kept: List[str] = field(default_factory=list)   # methods someone else re-patched since: left in place
    seconds: float = 0.0
    note: Optional[str] = None


class Attachment:
    """ortprof's side of one attached process."""

    def __init__(self, pid, hook_dir, answer, target, timings, out):
        self.pid = pid
        self.ns_pid = answer["pid"]
        self.target = target
        self.python = answer.get("python")
        self.ort_version = answer.get("ort_version")
        self.sessions = answer.get("sessions") or []
        self.timings = timings
        self.pipe_size = answer.get("pipe_size")
        self.hook_dir = Path(hook_dir)
        self.records_path = self.hook_dir / f"hook-{self.ns_pid}.jsonl"
        self.control = answer["control"]
        self.read_fd = None
        self.mem_fd = None
        self.detached_record = None
        self.eof = False
        self.result = None
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._partial = b""
        self._beats = 1
        self._beating = True
        self._thread = None
        self._out = out              # hook_dir/hook-<ns pid>.jsonl, opened before attaching
        self._answer = answer

    # -- set up while the process is still stopped ----------------------------------------
    def _connect(self):
        pid, fd = self.pid, self._answer["read_fd"]
        expected = os.stat(f"/proc/{pid}/fd/{fd}")
        self.read_fd = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if os.fstat(self.read_fd).st_ino != expected.st_ino:
            raise GdbError(f"pid {pid}: the pipe ortprof opened is not the one the hook made")
        self.mem_fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        self._beat()

    def _write_control(self, index, value):
        if self.mem_fd is None:
            raise OSError(f"/proc/{self.pid}/mem is not open")
        os.pwrite(self.mem_fd, struct.pack("=q", value), self.control + 8 * index)

    def _beat(self):
        self._beats += 1
        self._write_control(0, self._beats)

    def _start(self):
        self._thread = threading.Thread(target=self._pump, name=f"ortprof-attach-{self.pid}", daemon=True)
        self._thread.start()

    # -- the records and the lease --------------------------------------------------------
    def _pump(self):
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN | select.POLLHUP)
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        draining_until = None
        try:
            while True:
                if self._stop.is_set() and draining_until is None:
                    draining_until = time.monotonic() + 0.2
                if draining_until is not None and time.monotonic() >= draining_until:
                    break
                if poller.poll(100):
                    try:
                        data = os.read(self.read_fd, 1 << 16)
                    except BlockingIOError:
                        data = None
                    if data == b"":
                        self.eof = True
                        break
                    if data:
                        self._take(data)
                now = time.monotonic()
                if now >= next_beat and self._beating and self.detached_record is None:
                    next_beat = now + HEARTBEAT_SECONDS
                    try:
                        self._beat()
                    except OSError:
                        pass    # the process is gone: EOF comes next
        finally:
            if self._partial:
                self._out.write(self._partial + b"\n")
                self._partial = b""
            self._out.flush()

    def _take(self, data):
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if not lines:
            return
        self._out.write(b"".join(line + b"\n" for line in lines))
        self._out.flush()
        for line in lines:
            if line.startswith(b'{"event": "detached"'):
                try:
                    self.detached_record = json.loads(line)
                except ValueError:
                    self.detached_record = {}

    @property
    def attached(self):
        """False once the process said it detached, or exited."""
        return self.result is None and self.detached_record is None and not self.eof

    def _wait(self, condition, seconds):
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        return condition()

    # -- detach -----------------------------------------------------------------------------
    def detach(self, timeout=DEFAULT_TIMEOUT, gdb=None):
        """Detach (once; later calls return the same DetachResult). The stop flag first: the
        process's next flush detaches. Without one within COOPERATIVE_SECONDS, gdb runs the
        detach at a safe point (within `timeout`); a process that reaches none (idle) is left
        with the stop flag set: status `pending`, it detaches at its next run()."""
        with self.lock:
            if self.result is not None:
                return self.result
            started = time.monotonic()
            result = DetachResult(self.pid, "detached")
            try:
                self._detach(result, timeout, gdb, started)
            finally:
                self._stop.set()
                if self._thread is not None:
                    self._thread.join(2.0)
                for fd in (self.read_fd, self.mem_fd):
                    if fd is not None:
                        os.close(fd)
                self.read_fd = self.mem_fd = None
                if self._out is not None:
                    self._out.close()
                _ATTACHED.pop(self.pid, None)
                result.seconds = round(time.monotonic() - started, 4)
                self.result = result
            return result

    def _detach(self, result, timeout, gdb, started):
        gone = lambda: self.eof or not os.path.exists(f"/proc/{self.pid}")   # noqa: E731
        said = lambda: self.detached_record is not None or gone()            # noqa: E731
        reading = self._thread is not None
        self._beating = False        # the process may free nothing we write, but no need to write more
        if self.detached_record is not None:
            result.how = "self"
        elif gone():
            pass
        else:
            try:
                self._write_control(1, 1)
            except OSError:
                reading = False
            if reading and self._wait(said, min(COOPERATIVE_SECONDS, timeout)):
                result.how = "run" if self.detached_record is not None else None
            else:
                try:
                    gdb_path = target_checks.require_gdb(gdb)
                    answer = json.loads(gdb_driver.run_at_safe_point(
                        gdb_path, self.pid, DETACH_EXPRESSION, max(1.0, timeout - (time.monotonic() - started)),
                        lambda line: target_checks.refusal(self.target, line), self.target.functions))
                    result.how = "gdb" if answer.get("attached") else "run"
                except SafePointTimeout:
                    result.status = "pending"
                    result.note = ("the process reached no safe point (idle): its stop flag is set, it restores its "
                                   "methods and closes its pipe at its next run(); nothing of ortprof runs until then")
                except ProcessGone:
                    pass
        if result.status != "pending" and reading:
            self._wait(lambda: self.eof or gone(), 2.0)
        record = self.detached_record or {}
        if self.detached_record is None and gone():
            result.status = "gone"
        result.why = record.get("why")
        result.runs = record.get("runs")
        result.dropped = record.get("dropped")
        result.kept = record.get("kept") or []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.detach()


_ATTACHED: Dict[int, Attachment] = {}


def attachment_of(pid):
    """The Attachment this process holds on `pid`, or None."""
    return _ATTACHED.get(pid)


def attach(pid, hook_dir, timeout=DEFAULT_TIMEOUT, lease=LEASE_SECONDS, gdb=None, warmup_runs=5):
    """Attach to process `pid`: its existing sessions get `session` records and its run() calls
    are timed from now on, as the startup hook does, into `hook_dir`/hook-<pid>.jsonl.
    Returns the Attachment (its `sessions`: the records of the sessions found).

    Raises InputError (no such process, not CPython, onnxruntime not loaded or not imported,
    ortprof itself), AlreadyAttached (an InputError), EnvironmentProblem (gdb missing, ptrace
    refused: with the reason and the fix; the CPython API not exported; /proc/PID/mem not
    writable), AttachTimeout (no safe point within `timeout` s: the process was left as it
    was), ProcessGone, CallStuck or GdbError (ortprof's bugs and oddities)."""
    pid = int(pid)
    if pid in _ATTACHED and _ATTACHED[pid].attached:
        raise AlreadyAttached(f"pid {pid}: this ortprof is attached to it already")
    target = target_checks.inspect(pid)
    gdb_path = target_checks.require_gdb(gdb)
    target_checks.require_attachable(target)
    arguments = {"lease_seconds": float(lease or 0), "warmup_runs": int(warmup_runs),
                 "by": {"pid": os.getpid(), "host": socket.gethostname(), "uid": os.geteuid()}}
    records_path, out = _open_records(hook_dir, target.ns_pid)
    timings = {}
    holder = {}

    def connect(value):
        answer = json.loads(value)
        if not answer.get("ok"):
            return
        attachment = Attachment(pid, hook_dir, answer, target, timings, out)
        holder["attachment"] = attachment
        try:
            attachment._connect()
        except OSError as exc:
            holder["error"] = exc

    try:
        value = gdb_driver.run_at_safe_point(gdb_path, pid, _attach_expression(arguments), timeout,
                                             lambda line: target_checks.refusal(target, line), target.functions,
                                             timings, connect)
    except BaseException:
        if "attachment" in holder:      # attached, then interrupted: undo it
            _undo(holder["attachment"], gdb_path)
        else:
            _discard(out, records_path)
        raise
    answer = json.loads(value)
    if not answer.get("ok"):
        _discard(out, records_path)
        raise _answer_error(pid, answer)
    attachment = holder["attachment"]
    if "error" in holder:
        _undo(attachment, gdb_path)
        raise EnvironmentProblem(f"pid {pid}: attached, but ortprof cannot open its pipe or write its memory "
                                 f"through /proc/{pid} ({holder['error']}); detached again. Fix: run ortprof with "
                                 "the rights to ptrace it (root, CAP_SYS_PTRACE)")
    try:
        attachment._start()
        _ATTACHED[pid] = attachment
        if not _EXIT_HOOK:
            atexit.register(_detach_all)
            _EXIT_HOOK.append(True)
    except BaseException:
        _undo(attachment, gdb_path)
        raise
    return attachment


_EXIT_HOOK = []


def _open_records(hook_dir, ns_pid):
    """(path, stream) of hook_dir/hook-<ns_pid>.jsonl, opened for appending; InputError if it cannot be."""
    path = Path(hook_dir) / f"hook-{ns_pid}.jsonl"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, open(path, "ab")
    except OSError as exc:
        raise InputError(f"cannot write the records to {path}: {exc.strerror or exc}") from None


def _detach_all():
    """At exit, what is still attached is detached (a safety net: the lease would do it later)."""
    for attachment in list(_ATTACHED.values()):
        try:
            attachment.detach(timeout=3.0)
        except Exception:
            pass


def _discard(out, path):
    """The records file made for an attach that did not happen: closed, removed when empty."""
    out.close()
    try:
        if path.stat().st_size == 0:
            path.unlink()
    except OSError:
        pass


def _undo(attachment, gdb_path):
    try:
        attachment.detach(gdb=gdb_path)
    except OrtprofError:
        pass


def _answer_error(pid, answer):
    kind, message = answer.get("error"), answer.get("message")
    if kind == "no-ort":
        return InputError(f"pid {pid}: onnxruntime's library is loaded but its Python package is not imported "
                          "in the main interpreter; nothing to attach to")
    if kind == "attached":
        by = answer.get("by") or {}
        return AlreadyAttached(f"pid {pid}: ortprof is already attached to it (ortprof pid {by.get('pid')} on "
                               f"{by.get('host')}); detach that one first, or read its records", by=by)
    if kind == "hooked":
        hook_dir = answer.get("hook_dir")
        return AlreadyAttached(f"pid {pid} was started with ortprof's startup hook: its records are already "
                               f"written to {hook_dir} (as the process names it)", hook_dir=hook_dir)
    if kind == "python":
        return InputError(f"pid {pid}: {message}: ortprof's code needs 3.8 or newer")
    if kind == "finalizing":
        return InputError(f"pid {pid}: its interpreter is shutting down")
    return GdbError(f"pid {pid}: ortprof's code failed in the process: {message}\n{answer.get('traceback', '')}")


def detach(pid_or_attachment, timeout=DEFAULT_TIMEOUT, gdb=None):
    """Detach from a process: an Attachment, or a pid this process attached to; a pid it does not
    hold (an ortprof that died) is detached through gdb. Returns a DetachResult."""
    if isinstance(pid_or_attachment, Attachment):
        return pid_or_attachment.detach(timeout, gdb)
    pid = int(pid_or_attachment)
    held = _ATTACHED.get(pid)
    if held is not None:
        return held.detach(timeout, gdb)
    started = time.monotonic()
    target = target_checks.inspect(pid)
    gdb_path = target_checks.require_gdb(gdb)
    target_checks.require_attachable(target)
    try:
        answer = json.loads(gdb_driver.run_at_safe_point(gdb_path, pid, DETACH_EXPRESSION, timeout,
                                                         lambda line: target_checks.refusal(target, line),
                                                         target.functions))
    except ProcessGone:
        return DetachResult(pid, "gone", seconds=round(time.monotonic() - started, 4))
    if not answer.get("ok"):
        raise _answer_error(pid, answer)
    if not answer.get("attached"):
        return DetachResult(pid, "detached", how="self", note="ortprof was not attached to it",
                            seconds=round(time.monotonic() - started, 4))
    return DetachResult(pid, "detached", how="gdb", why=answer.get("why"), runs=answer.get("runs"),
                        dropped=answer.get("dropped"), kept=answer.get("kept") or [],
                        seconds=round(time.monotonic() - started, 4))


@contextlib.contextmanager
def attached(pid, hook_dir, **options):
    """`with attached(pid, hook_dir) as attachment:` detaches when the block ends, on an exception,
    on Ctrl+C, and on SIGTERM (turned into KeyboardInterrupt for the block when SIGTERM would
    otherwise just end ortprof)."""
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def terminated(signum, frame):
            raise KeyboardInterrupt("SIGTERM")
        previous = signal.signal(signal.SIGTERM, terminated)
    try:
        attachment = attach(pid, hook_dir, **options)
        try:
            yield attachment
        finally:
            attachment.detach(gdb=options.get("gdb"))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
