"""What the agent records of one process in a window, one capture per signal.

The same Capture phases as `ortprof record` (ortprof.signals.base), driven by the
process's window (window.ProcessWindow): start -> window_opened -> tick (each
second) -> window_closing -> finish, and stop when the window is discarded. Where
the agent records a signal differently from `record` the capture is here: one
long-lived perf per process (perfsession.PerfSession) enabled for the window and
cut at its end, /proc snapshots taken by the window's loop instead of a sampler
thread, the hook's records tailed (a process launched with it, or attached by the agent),
and the uprobes the agent added (uprobes.py: a native client's C API, a Python process's
pybind11 dispatchers) recorded by the process's perf, decoded from the window's perf.data.
The cgroup's is the signal's own.
"""
import csv
import json
import os
import subprocess
import time

import psutil

from ..recording.threadstats import HEADER, ThreadCpuSampler
from ..signals.base import Capture
from ..signals.cgroup import CgroupCapture
from ..signals.runs import HOOK_DIR
from ..signals.samples import PERF_DATA
from ..signals.threads import THREADS_CSV
from .discovery import namespace_tids
from .uprobes import CAPI


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

    FLUSH_WAIT = 1.2     # the process writes its runs every second (at a run's end)

    def finish(self):
        """The window's runs: those of its last second are written by the process's next flush,
        waited for until a run that started after the window's end is read (once: the windows
        of all processes finish one after the other)."""
        window, target = self.recorder, self.recorder.target
        deadline = window.end_mono + self.FLUSH_WAIT
        self.tail.poll()
        while not window.exited and time.monotonic() < deadline and (self.tail.newest_start() or 0) <= window.end_mono:
            time.sleep(0.05)
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
        native, window = self.native, self.recorder
        record = CapiRecord(not_timed=self.not_timed)
        if native is not None:
            table = native.probed.table
            record = CapiRecord(library=native.probed.path, ort_version=table.ort_version,
                                api_version=table.api_version, build_id=table.build_id)
            calls = self._calls()
            records = native.window_records(calls, window.target.pid, self.thread_starts)
            _write_records(window, HOOK_FILE.format(pid=window.target.pid), records)
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


INSTEAD_OF_ATTACH = "ortprof agent injects nothing without --attach (or the attach was refused: its log says why)"


class WindowPybindCapture(Capture):
    """runs: the run() calls the pybind11 dispatcher probes saw in the window, from the window's
    perf.data, as the runs signal's session and runs records (agent/pybind.PythonProcess keeps
    the session numbers of earlier windows); the runs go to the latency histogram too."""

    PERF_SCRIPT_TIMEOUT = 60
    HOOK_FILE = "hook-pybind-{pid}.jsonl"

    def __init__(self, window, python, perf, not_timed=None):
        super().__init__(window)
        self.python, self.perf, self.not_timed = python, perf, not_timed

    def finish(self):
        from ..signals.pybind import PybindRecord
        from ..signals.pybind.sessions import timed, untimed_counts
        window = self.recorder
        record = PybindRecord(instead_of_attach=INSTEAD_OF_ATTACH, not_timed=self.not_timed)
        window.manifest.set_section("pybind", record)
        if self.python is None:
            window.note(f"run() is not timed: the pybind11 dispatchers cannot be probed: {self.not_timed}")
            return
        sites = self.python.probed.sites
        record.module, record.build_id, record.layout, record.methods = \
            sites.module_in_process, sites.build_id, sites.layout, sites.methods
        record.ort_version = self.python.probed.ort_version
        try:
            spans = self.python.spans(self.perf, str(window.run.file(PERF_DATA)), str(window.run.path),
                                      window.target.pid, self.PERF_SCRIPT_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as error:
            window.note(f"the pybind11 dispatcher uprobe events could not be decoded: {error}")
            return
        records = self.python.window_records(spans, window.target.pid)
        _write_records(window, self.HOOK_FILE.format(pid=window.target.pid), records)
        record.calls, record.runs, record.untimed = len(spans), sum(1 for span in spans if timed(span)), \
            untimed_counts(spans)
        record.sessions = sum(1 for item in records if item["event"] == "session")


def _write_records(window, name, records):
    """The runs signal's records of the window (hook/NAME), and its timed runs and their labels
    for the latency histogram."""
    from .capi import timed_runs
    from .sessions import session_labels
    with open(window.run.file(HOOK_DIR) / name, "w") as stream:
        for item in records:
            stream.write(json.dumps(item) + "\n")
    window.runs = timed_runs(records)
    window.run_labels = session_labels(records)


def window_captures(window, session, tail, uprobes=None, perf=None):
    """The captures of one process's window, in the signals' order (samples, runs, capi,
    threads, cgroup). `uprobes` (uprobes.AgentUprobes) knows whether the process's perf
    records C API or pybind11 dispatcher uprobes."""
    captures = [WindowPerfCapture(window, session)]
    if tail is not None:
        captures.append(WindowHookCapture(window, tail))
    if uprobes is not None:
        follower = uprobes.process(window.target)
        if follower is not None and set(follower.probed.events) <= set(session.probe_events):
            kind = follower.probed.kind
            captures.append(WindowCapiCapture(window, follower, perf) if kind == CAPI
                            else WindowPybindCapture(window, follower, perf))
        else:
            kind, why = uprobes.not_timed(window.target)
            if why:
                captures.append(WindowCapiCapture(window, None, perf, why) if kind == CAPI
                                else WindowPybindCapture(window, None, perf, why))
    captures += [WindowThreadsCapture(window, window.target.pid), CgroupCapture(window)]
    return captures
