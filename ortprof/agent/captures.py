"""What the agent records of one process in a window, one capture per signal.

The same Capture phases as `ortprof record` (ortprof.signals.base), driven by the
process's window (window.ProcessWindow): start -> window_opened -> tick (each
second) -> window_closing -> finish, and stop when the window is discarded. Where
the agent records a signal differently from `record` the capture is here: one
long-lived perf per process (perfsession.PerfSession) enabled for the window and
cut at its end, /proc snapshots taken by the window's loop instead of a sampler
thread, and the hook's records tailed instead of injected. The cgroup's is the
signal's own.
"""
import csv
import os

import psutil

from ..recording.threadstats import HEADER, ThreadCpuSampler
from ..signals.base import Capture
from ..signals.cgroup import CgroupCapture
from ..signals.runs import HOOK_DIR
from ..signals.samples import PERF_DATA
from ..signals.threads import THREADS_CSV
from .discovery import namespace_tids


class WindowPerfCapture(Capture):
    """samples (and the futex tracepoints when the agent traces them): the process's perf."""

    def __init__(self, window, session):
        super().__init__(window)
        self.session = session

    def start(self, pid):
        """Enable perf's events. When perf is gone the window ends: the process exited, or perf
        died while it lives."""
        if self.session.begin():
            return
        if psutil.pid_exists(pid) and not self.recorder.zombie():
            self.recorder.perf_died = True
        else:
            self.recorder.exited = True

    def running(self):
        return self.session.running()

    def window_closing(self):
        self.session.end()

    def finish(self):
        window_file = self.session.cut()
        if window_file is not None:
            os.replace(window_file, self.recorder.run.file(PERF_DATA))
        self.recorder.manifest.profilers = {"perf": self.session.describe(self.recorder.run.file(PERF_DATA))}


class WindowThreadsCapture(Capture):
    """threads: each thread's CPU time from /proc at the window's start, each second and its end."""

    def __init__(self, window, pid):
        super().__init__(window)
        self.sampler = ThreadCpuSampler(pid, window.run.file(THREADS_CSV))
        self.stream = open(window.run.file(THREADS_CSV), "w", newline="")
        self.writer = csv.writer(self.stream)
        self.writer.writerow(HEADER)

    def window_opened(self):
        self.tick()

    def tick(self):
        if not self.recorder.exited and not self.sampler.sample_once(self.writer):
            self.recorder.exited = True
        self.stream.flush()

    def window_closing(self):
        self.tick()

    def finish(self):
        self.stop()

    def stop(self):
        if not self.stream.closed:
            self.stream.close()


class WindowHookCapture(Capture):
    """runs: the hook's records of a process launched with it, cut to the window."""

    def __init__(self, window, tail):
        super().__init__(window)
        self.tail = tail

    def finish(self):
        window, target = self.recorder, self.recorder.target
        self.tail.poll()
        self.tail.write_window(window.run.file(HOOK_DIR), window.start_mono, window.end_mono,
                               target.ns_pid or target.pid,
                               namespace_tids(target.pid) if target.ns_pid != target.pid else None)


def window_captures(window, session, tail):
    """The captures of one process's window, in the signals' order (samples, runs, threads, cgroup)."""
    captures = [WindowPerfCapture(window, session)]
    if tail is not None:
        captures.append(WindowHookCapture(window, tail))
    captures += [WindowThreadsCapture(window, window.target.pid), CgroupCapture(window)]
    return captures
