"""What the agent records of one process in a window, one capture per signal.

The same Capture phases as `ortprof record` (ortprof.signals.base), driven by the
process's window (window.ProcessWindow): start -> window_opened -> tick (each
second) -> window_closing -> finish, and stop when the window is discarded. Where
the agent records a signal differently from `record` the capture is here: one
long-lived perf per process (perfsession.PerfSession) enabled for the window and
cut at its end, /proc snapshots taken by the window's loop instead of a sampler
thread, the hook's records tailed instead of injected, and a native client's C API
uprobes (added by the agent, agent/capi.py) recorded by the process's perf, decoded
from the window's perf.data. The cgroup's is the signal's own.
"""
import csv
import json
import os
import subprocess

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


class WindowCapiCapture(Capture):
    """capi (and runs): the C API calls the uprobes saw in the window, from the window's
    perf.data, as the runs signal's session and runs records (agent/capi.NativeProcess
    remembers the sessions of earlier windows); the runs go to the latency histogram too."""

    PERF_SCRIPT_TIMEOUT = 60

    def __init__(self, window, native, perf, not_timed=None):
        super().__init__(window)
        self.native, self.perf, self.not_timed = native, perf, not_timed
        self.thread_starts = {}

    def window_closing(self):
        from ..signals.capi.capture import thread_starts
        if self.native is not None and not self.recorder.exited:
            self.thread_starts = thread_starts(self.recorder.target.pid)   # workers tied to their session

    def finish(self):
        from ..signals.capi import CapiRecord
        from ..signals.capi.capture import HOOK_FILE
        from .capi import timed_runs
        native, window = self.native, self.recorder
        record = CapiRecord(not_timed=self.not_timed)
        if native is not None:
            table = native.library.table
            record = CapiRecord(library=native.library.path, ort_version=table.ort_version,
                                api_version=table.api_version, build_id=table.build_id)
            calls = self._calls()
            records = native.window_records(calls, window.target.pid, self.thread_starts)
            with open(window.run.file(HOOK_DIR) / HOOK_FILE.format(pid=window.target.pid), "w") as stream:
                for item in records:
                    stream.write(json.dumps(item) + "\n")
            window.runs = timed_runs(records)
            window.run_labels = native.labels(records)
            record.calls, record.runs = len(calls), len(window.runs)
            record.sessions = sum(1 for item in records if item["event"] == "session")
        window.manifest.set_section("capi", record)

    def _calls(self):
        """The window's probe events, paired into calls."""
        from ..signals.capi.spans import read_calls
        window = self.recorder
        try:
            return read_calls(self.perf, [str(window.run.file(PERF_DATA))], str(window.run.path), window.target.pid,
                              timeout=self.PERF_SCRIPT_TIMEOUT, with_samples=True)
        except (OSError, subprocess.TimeoutExpired) as error:
            window.note(f"the C API uprobe events could not be decoded: {error}")
            return []


def window_captures(window, session, tail, uprobes=None, perf=None):
    """The captures of one process's window, in the signals' order (samples, runs, capi,
    threads, cgroup). `uprobes` (agent/capi.AgentUprobes) knows whether the process's perf
    records C API uprobes."""
    captures = [WindowPerfCapture(window, session)]
    if tail is not None:
        captures.append(WindowHookCapture(window, tail))
    if uprobes is not None:
        native = uprobes.process(window.target)
        if native is not None and set(native.library.events) <= set(session.probe_events):
            captures.append(WindowCapiCapture(window, native, perf))
        else:
            why = uprobes.not_timed(window.target)
            if why:
                captures.append(WindowCapiCapture(window, None, perf, why))
    captures += [WindowThreadsCapture(window, window.target.pid), CgroupCapture(window)]
    return captures
