"""`ortprof agent --attach`: the startup hook's recording attached to each followed Python process
that was not launched with it (ortprof.attach), for its sessions' models and options.

Each such process gets one attachment for as long as the agent follows it: its records go to
`<work-dir>/attach/<pid>/hook-<pid>.jsonl` (directories of mode 0700: only the agent's user
reads them; the process writes nothing there, ortprof's side of the attachment copies its pipe
into the file) and are tailed like a hooked process's (hooktail.HookTail): every run() is timed,
between windows too, so the process's histogram is continuous, and its perf records no probes
(one source of runs). The attachment's lease is renewed by the agent every second; one that is
lost (the process detached itself: a lease that ran out while the agent was stopped, a detach by
someone else) is attached again at the next interval (`attach-lost`, then `attached`). When the
attach is refused (no gdb, ptrace not allowed, no safe point within ATTACH_TIMEOUT: an idle
process), the process's runs are timed by the pybind11 dispatcher probes instead
(`attach-refused`); an idle process is tried again after RETRY_IDLE_SECONDS. A process launched
with the startup hook (without ORTPROF_HOOK_DIR in its environment) has its own records read.

The records file grows by ~40 bytes a run. Once the tail has read TRIM_BYTES of it, what it read
is freed (a hole punched at the file's start: the writer appends, the tail reads on, nothing
unread is lost); on a filesystem that cannot punch holes the file grows (`attach-records-kept`).

Detached when the process is no longer followed and when the agent stops (SIGTERM, SIGINT,
--once's end): each process's next flush (within a second of a run) restores its methods; one
that runs less than every two seconds is detached through gdb. A killed agent's attachments
detach themselves at their lease's end; the next agent removes their directories.
"""
import ctypes
import os
import shutil
import threading
import time
from typing import Dict, Optional, Tuple

from ..errors import OrtprofError
from .discovery import visible_path
from .hooktail import HookTail

ATTACH_TIMEOUT = 5.0            # gdb's attach and the wait for a safe point, per process
RETRY_IDLE_SECONDS = 600.0      # a process that reached no safe point is tried again after this
TRIM_BYTES = 4 << 20
DETACH_TIMEOUT = 10.0
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_BLOCK = 4096


def punch_read_part(path: str, length: int) -> None:
    """Free the first `length` bytes of `path` (rounded down to whole blocks), keeping its size and
    the offsets of what follows. OSError when the filesystem cannot."""
    length -= length % _BLOCK
    if length <= 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, 0, length) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), path)
    finally:
        os.close(fd)


class AgentAttachments:
    def __init__(self, work_dir: str, log, trim_bytes: int = TRIM_BYTES):
        self.directory = os.path.join(os.path.abspath(work_dir), "attach")
        self.log = log
        self.trim_bytes = trim_bytes
        self.held: Dict[tuple, object] = {}              # target key -> ortprof.attach.Attachment
        self.tails: Dict[tuple, HookTail] = {}           # target key -> its records, tailed
        self.refused: Dict[tuple, Tuple[str, Optional[float]]] = {}   # key -> (why, when to try again)
        self.trimmed: Dict[tuple, int] = {}              # key -> bytes of its file freed so far
        self.untrimmable = False

    def prepare(self) -> None:
        """The directory, private to the agent's user; what a killed agent left in it removed (its
        attachments detach themselves when their lease runs out)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        for name in os.listdir(self.directory):
            shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def holds(self, key) -> bool:
        return key in self.held

    def follow(self, target) -> Optional[HookTail]:
        """The tail of `target`'s records: attached now if it is not (found, or its attachment was
        lost); None when the attach is refused (its runs are then probed)."""
        key = target.key
        held = self.held.get(key)
        if held is not None and held.attached:
            return self.tails[key]
        if key in self.tails and held is None:
            return self.tails[key]              # launched with the hook: its own records
        if held is not None:
            why = (held.detached_record or {}).get("why") or "its pipe closed"
            self._drop(key, timeout=3.0)
            if not os.path.exists(f"/proc/{target.pid}"):
                return None
            self.log.warning("attach-lost", pid=target.pid, service=target.service, reason=why)
        refused = self.refused.get(key)
        if refused is not None and (refused[1] is None or time.monotonic() < refused[1]):
            return None
        return self._attach(target)

    def _attach(self, target) -> Optional[HookTail]:
        from ..attach import AlreadyAttached, AttachTimeout, attach
        key = target.key
        directory = os.path.join(self.directory, str(target.pid))
        shutil.rmtree(directory, ignore_errors=True)     # a fresh file: session numbers start again
        os.makedirs(directory, mode=0o700)
        started = time.monotonic()
        try:
            attachment = attach(target.pid, directory, timeout=ATTACH_TIMEOUT)
        except AlreadyAttached as already:
            if already.hook_dir:     # launched with the hook: its own records, read where it writes them
                shutil.rmtree(directory, ignore_errors=True)
                tail = HookTail(os.path.join(visible_path(target.pid, already.hook_dir),
                                             f"hook-{target.ns_pid or target.pid}.jsonl"))
                tail.take()          # what ran before the agent saw it is not counted
                self.tails[key] = tail
                self.log.info("hook-found", pid=target.pid, service=target.service, hook_dir=already.hook_dir)
                return tail
            return self._refuse(target, directory, str(already), None)
        except AttachTimeout as timeout:
            return self._refuse(target, directory, str(timeout), time.monotonic() + RETRY_IDLE_SECONDS)
        except OrtprofError as error:
            return self._refuse(target, directory, str(error), None)
        self.refused.pop(key, None)
        self.held[key] = attachment
        self.tails[key] = tail = HookTail(str(attachment.records_path))
        self.trimmed[key] = 0
        self.log.info("attached", pid=target.pid, service=target.service, sessions=len(attachment.sessions),
                      seconds=round(time.monotonic() - started, 3), records=str(attachment.records_path))
        return tail

    def _refuse(self, target, directory, why, retry_at) -> None:
        shutil.rmtree(directory, ignore_errors=True)
        self.refused[target.key] = (why, retry_at)
        self.log.warning("attach-refused", pid=target.pid, service=target.service, reason=why,
                         fallback="run() timed by uprobes on the pybind11 dispatchers (models and options unknown)",
                         retry_seconds=RETRY_IDLE_SECONDS if retry_at else None)
        return None

    def trim(self) -> None:
        """Free what the tails have read of the records files, past TRIM_BYTES each."""
        if self.untrimmable:
            return
        for key in self.held:
            tail = self.tails[key]
            if tail.offset - self.trimmed.get(key, 0) < self.trim_bytes:
                continue
            try:
                punch_read_part(tail.path, tail.offset)
            except OSError as error:
                self.untrimmable = True
                self.log.warning("attach-records-kept", file=tail.path,
                                 reason=f"the records file's read part cannot be freed ({error.strerror}): it grows "
                                 "by ~40 bytes a run while attached")
                return
            self.trimmed[key] = tail.offset

    def release(self, key) -> None:
        """The process is no longer followed (gone): its attachment taken out, its records removed."""
        self.refused.pop(key, None)
        self._drop(key, DETACH_TIMEOUT)

    def _drop(self, key, timeout) -> None:
        held = self.held.pop(key, None)
        tail = self.tails.pop(key, None)
        self.trimmed.pop(key, None)
        if held is None:
            return
        result = held.detach(timeout=timeout)
        self.log.info("detached", pid=held.pid, status=result.status, how=result.how, runs=result.runs,
                      seconds=result.seconds)
        if tail is not None:
            shutil.rmtree(os.path.dirname(tail.path), ignore_errors=True)

    def close(self) -> None:
        """Detach every process at once (each within its next flush, or through gdb)."""
        threads = [threading.Thread(target=self.release, args=(key,), name=f"ortprof-detach-{key[0]}")
                   for key in list(self.held)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.tails.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
