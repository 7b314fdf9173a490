"""What runs inside the process ortprof attaches to (see ortprof/attach/__init__.py for how).

ortprof.attach.payload_source() is hookcore's source followed by this file's, executed in a
fresh module (registered as sys.modules["_ortprof_attach"] while attached) by one Python
expression that returns attach()'s JSON answer; detach() is called the same way. Standalone
like hookcore: standard library only, Python 3.8+, and nothing here may raise into the
interpreter that runs it (the expression's value is the only way out).

While attached, the process has:
- InferenceSession.__init__/run/run_with_iobinding and SessionOptions.add_session_config_entry
  replaced by hookcore's wrappers (the startup hook's, timed the same way);
- one pipe (both ends, close-on-exec; the write end non-blocking), whose read end ortprof opens
  through /proc/PID/fd: records reach ortprof whatever the process's user and mount namespace,
  and a full pipe drops records instead of blocking run();
- a 16-byte control block (array('q', [heartbeat, stop])) ortprof writes through /proc/PID/mem:
  at its next flush (the first run() a second after the previous flush, or 512 runs later), `stop`
  makes it detach, and so does a heartbeat that did not change for `lease_seconds` (ortprof was
  killed). Checked there rather than in every run(): one Python call less on the hot path;
- an at-fork callback: a child forked while attached detaches itself (closes the inherited pipe);
  it stays registered after the detach (Python cannot unregister one), a no-op lambda that
  keeps nothing of this module alive but the control block (about 100 bytes), which must
  outlive the attachment: ortprof may write it once more after the process detached.
No thread is started: run() timings are flushed by the calls themselves, as in the startup hook.
"""
import array
import fcntl
import gc
import itertools
import json
import os
import select
import sys
import threading
import time
import traceback
import weakref

try:    # imported as ortprof.attach.payload (tests, docs); in the target hookcore's names are already here
    from .hookcore import MODULE, Recorder, describe_options, model_name, patch_session_class
except ImportError:
    pass

NAME = "_ortprof_attach"
PIPE_SIZE = 1 << 20          # bytes the pipe buffers while ortprof is slow to read (1 MiB, the unprivileged maximum)
BACKLOG_MAX = 4 << 20        # bytes of unwritten records kept beyond that; more are dropped
UNKNOWN_FOR_EXISTING = ["tid", "load_seconds", "mono", "new_threads", "config entries other than the known keys"]

STATE = None                 # the Attachment of this module, while attached


class PipeRecorder(Recorder):
    """hookcore's Recorder writing to the attachment's pipe; it also watches the control block."""

    def __init__(self, fds, control, lease_seconds, warmup_runs, hello):
        self.read_fd, self.fd = fds
        self.identity = _identity(self.fd)
        self.read_identity = _identity(self.read_fd)
        self.backlog = b""
        self.dropped = 0
        self.control = control
        self.lease_seconds = lease_seconds
        self.beat = (control[0], time.monotonic())
        self.stop_reason = None
        self.on_stop = None
        Recorder.__init__(self, warmup_runs, hello)

    def write(self, record):
        record.setdefault("source", "attach")     # what timed these sessions (analysis.latency keys on it)
        Recorder.write(self, record)

    def emit(self, line):
        if self.fd is None:
            return
        if _identity(self.fd) != self.identity:
            # the process closed our descriptor (and may have reused its number): never write to it again
            self.fd = self.read_fd = None
            raise OSError("the records pipe's descriptor was closed by the process")
        data = self.backlog + line.encode()
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            written = 0
        if len(data) - written > BACKLOG_MAX and written <= len(self.backlog):
            self.backlog = self.backlog[written:]    # none of this line went out: drop it whole
            self.dropped += 1
        else:
            self.backlog = data[written:]

    def stopped(self, exc):
        self.stop_reason = f"records pipe failed: {exc!r}"

    def flush(self):
        # about once a second, on the thread of a run() that just ended: the control block
        if self.control[1] and self.stop_reason is None:
            self.stop_reason = "stop requested"
        beat = self.control[0]
        if beat != self.beat[0]:
            self.beat = (beat, time.monotonic())
        elif beat and self.stop_reason is None and time.monotonic() - self.beat[1] > self.lease_seconds:
            self.stop_reason = f"lease expired: ortprof stopped renewing it for {self.lease_seconds:g} s"
        Recorder.flush(self)
        if self.stop_reason is not None and self.on_stop is not None:
            try:
                self.on_stop(self.stop_reason)
            except Exception:    # on the workload's run(): never raise into it
                pass

    def close(self, drain_seconds):
        """Write what is left within `drain_seconds`, then close both ends (those still ours)."""
        with self.lock:
            deadline = time.monotonic() + drain_seconds
            if self.fd is not None and _identity(self.fd) != self.identity:
                self.fd = None
            while self.backlog and self.fd is not None:
                left = deadline - time.monotonic()
                poller = select.poll()          # not select(): the descriptor may be above FD_SETSIZE
                poller.register(self.fd, select.POLLOUT)
                if left <= 0 or not poller.poll(left * 1000):
                    break
                try:
                    self.backlog = self.backlog[os.write(self.fd, self.backlog):]
                except OSError:
                    break
            if self.backlog:
                self.dropped += self.backlog.count(b"\n") + 1
            fds = ((self.fd, self.identity), (self.read_fd, self.read_identity))
            self.fd, self.read_fd, self.backlog = None, None, b""
        close_ours(fds)


def _identity(fd):
    try:
        status = os.fstat(fd)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def close_ours(fds):
    """Close each (descriptor, identity) that is still the pipe we made: a number the process
    closed and reused is its own now."""
    for fd, identity in fds:
        if fd is not None and _identity(fd) == identity:
            try:
                os.close(fd)
            except OSError:
                pass


class Attachment:
    def __init__(self, module, recorder, patch, tracked, arguments):
        self.module = module
        self.recorder = recorder
        self.patch = patch
        self.tracked = tracked
        self.by = arguments.get("by")
        self.since = time.time()
        self.lock = threading.Lock()
        self.detached = None


def _subclasses(cls):
    found = [cls]
    for klass in found:
        found.extend(sub for sub in klass.__subclasses__() if sub not in found)
    return found


def _existing_sessions(session_class):
    """The sessions alive now: instances of the class or its subclasses, in gc's order (creation
    order for most). gc.get_referrers walks the collector's lists once, in C (about 16 ms for a
    million objects), and an instance refers to its class."""
    classes = _subclasses(session_class)
    seen, sessions = set(), []
    for candidate in gc.get_referrers(*classes):
        if type(candidate) in classes and id(candidate) not in seen:
            seen.add(id(candidate))
            sessions.append(candidate)
    return sessions


def _existing_record(session, number, ort):
    """A `session` record for a session created before the attach: what its object still tells
    (its options are read from the session: `options_known`). The thread that created it, how long
    that took, the threads it started and config entries set under other keys than the known ones
    cannot be known now: null, and named in `unknown`."""
    record = {"event": "session", "session": number, "pid": os.getpid(), "handle": session_handle(session),
              "tid": None, "model": None,
              "providers": None, "ort_version": getattr(ort, "__version__", None),
              "ort_file": getattr(ort, "__file__", None), "options": {}, "overrides": None,
              "load_seconds": None, "mono": None, "new_threads": None, "ort_profile": None,
              "options_known": True, "attached": True, "unknown": UNKNOWN_FOR_EXISTING}
    try:
        path = getattr(session, "_model_path", None)
        source = path if path is not None else getattr(session, "_model_bytes", None)
        record["model"] = str(model_name(source)) if source is not None else None
        record["providers"] = session.get_providers()
        record["options"] = describe_options(session.get_session_options(), ())
    except Exception as exc:   # a session still being created in another thread, an ORT that differs
        record["error"] = repr(exc)
    return record


# Registered with os.register_at_fork at each attach (Python cannot unregister it): a lambda whose
# globals are a dict of its own, so that after the detach it keeps nothing of this module alive
# but the control block, on purpose: ortprof writes that memory through /proc/PID/mem and may do
# so once more after the process detached (a heartbeat racing a detach it has not read yet); the
# block must never be freed and its memory reused.
AT_FORK = ("lambda: (lambda m: m is not None and getattr(m, 'STATE', None) is not None and m.forked())"
           f"(__import__('sys').modules.get({NAME!r}))")


def attach(arguments, module):
    """Attach; the answer as JSON. `module` is the fresh module this source runs in."""
    try:
        return json.dumps(_attach(arguments, module), default=str)
    except BaseException as exc:   # nothing may escape into the interpreter: SystemExit would end it
        return json.dumps({"ok": False, "error": "internal", "message": f"{type(exc).__name__}: {exc}",
                           "traceback": traceback.format_exc()})


def _attach(arguments, module):
    global STATE
    if sys.version_info < (3, 8):
        return {"ok": False, "error": "python", "message": f"Python {sys.version.split()[0]} is older than 3.8"}
    if sys.is_finalizing():
        return {"ok": False, "error": "finalizing", "message": "the interpreter is shutting down"}
    other = sys.modules.get(NAME)
    if other is not None:
        state = getattr(other, "STATE", None)
        return {"ok": False, "error": "attached", "message": "ortprof is already attached",
                "by": getattr(state, "by", None), "since": getattr(state, "since", None)}
    collection = sys.modules.get(MODULE)
    if collection is None or not hasattr(collection, "InferenceSession"):
        return {"ok": False, "error": "no-ort", "message": "onnxruntime is not imported in this interpreter"}
    session_class = collection.InferenceSession
    if getattr(session_class, "_ortprof_patched", False):
        return {"ok": False, "error": "hooked", "message": "ortprof's startup hook is already in this process",
                "hook_dir": os.environ.get("ORTPROF_HOOK_DIR")}
    ort = sys.modules.get("onnxruntime")
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    fcntl.fcntl(write_fd, fcntl.F_SETFL, fcntl.fcntl(write_fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        fcntl.fcntl(write_fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except OSError:
        pass    # the user's pipe quota is spent: the default 64 KiB
    control = array.array("q", [1, 0])        # heartbeat 1: the lease runs from now
    lease = float(arguments.get("lease_seconds") or 0) or float("inf")
    try:
        recorder = PipeRecorder((read_fd, write_fd), control, lease, int(arguments.get("warmup_runs", 5)),
                                {"attached": True, "by": arguments.get("by")})
        numbers = itertools.count(1)
        tracked = weakref.WeakSet()
        existing = _existing_sessions(session_class)
        patch = patch_session_class(collection, recorder, numbers=numbers, on_session=tracked.add)
        records = []
        for session in existing:
            record = _existing_record(session, next(numbers), ort)
            session._ortprof_session = record["session"]
            tracked.add(session)
            recorder.write(record)
            records.append(record)
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    STATE = Attachment(module, recorder, patch, tracked, arguments)
    recorder.on_stop = _stop_from_run
    sys.modules[NAME] = module
    os.register_at_fork(after_in_child=eval(AT_FORK, {"__builtins__": __builtins__, "control_block": control}))
    return {"ok": True, "pid": os.getpid(), "read_fd": read_fd, "write_fd": write_fd,
            "control": control.buffer_info()[0], "mono": time.monotonic(),
            "python": sys.version.split()[0], "implementation": sys.implementation.name,
            "ort_version": getattr(ort, "__version__", None), "sessions": records,
            "pipe_size": _pipe_size(write_fd)}


def _pipe_size(fd):
    try:
        return fcntl.fcntl(fd, getattr(fcntl, "F_GETPIPE_SZ", 1032))
    except OSError:
        return None


def _stop_from_run(why):
    # on the thread of a run() that just ended: ortprof asked to stop, its lease expired or the pipe failed
    _detach(why, drain_seconds=0.5 if why == "stop requested" else 0.0)


def detach(why="requested"):
    """Detach; the answer as JSON (also when this module is not attached any more)."""
    try:
        return json.dumps(_detach(why, drain_seconds=0.5), default=str)
    except BaseException as exc:
        return json.dumps({"ok": False, "error": "internal", "message": f"{type(exc).__name__}: {exc}",
                           "traceback": traceback.format_exc()})


def _detach(why, drain_seconds):
    global STATE
    state = STATE
    if state is None:
        return {"ok": True, "attached": False}
    with state.lock:
        if state.detached is not None:
            return state.detached
        state.detached = {"ok": True, "attached": True, "why": why}
    kept = state.patch.restore() if state.patch is not None else []
    for session in list(state.tracked):
        try:
            del session._ortprof_session
        except AttributeError:
            pass
    recorder = state.recorder
    recorder.flush()
    recorder.write({"event": "detached", "pid": os.getpid(), "why": why, "runs": recorder.run_count,
                    "dropped": recorder.dropped, "kept": kept, "mono": time.monotonic()})
    recorder.close(drain_seconds)
    if sys.modules.get(NAME) is state.module:
        del sys.modules[NAME]
    STATE = None
    state.detached.update({"kept": kept, "runs": recorder.run_count, "dropped": recorder.dropped})
    return state.detached


def forked():
    """In a child forked while attached: let go of the parent's pipe and restore the methods."""
    global STATE
    state, STATE = STATE, None
    if state is None:
        return
    recorder = state.recorder
    recorder.broken = True
    recorder.pending = []
    fds = ((recorder.fd, recorder.identity), (recorder.read_fd, recorder.read_identity))
    recorder.fd = recorder.read_fd = None
    close_ours(fds)
    try:
        state.patch.restore()
    except Exception:
        pass
    if sys.modules.get(NAME) is state.module:
        del sys.modules[NAME]
