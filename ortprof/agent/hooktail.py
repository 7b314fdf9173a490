"""The startup hook's records of one process, read incrementally.

A process launched with ortprof's hook (ORTPROF_HOOK_DIR set) appends JSON lines to
hook-<pid>.jsonl, <pid> as the process sees itself (its PID namespace's); so does an
attachment of the agent's (--attach, attachments.py), in the agent's directory. The agent
keeps the file offset, so each window reads only what was appended: `hello` and
`session` records are kept for every window, run() records are handed out once
(take(), for the latency histograms, whoever read them) and kept only as long as a
window may need them.
"""
import json
import os
from collections import deque


class HookTail:
    def __init__(self, path, keep_seconds=600):
        self.path = path
        self.offset = 0
        self.partial = b""
        self.static = []                # hello and session records, in order
        self.runs = deque()             # (session, start_mono, duration_s, tid, kind)
        self.fresh = []                 # runs read and not yet taken
        self.keep_seconds = keep_seconds
        self.source = None              # what its runs records say timed them ("attach"; the hook's say none)

    @classmethod
    def of(cls, target):
        if not target.hook_dir:
            return None
        return cls(os.path.join(target.hook_dir, f"hook-{target.ns_pid or target.pid}.jsonl"))

    def take(self):
        """The run() records not handed out yet (read now or by an earlier poll)."""
        self.poll()
        fresh, self.fresh = self.fresh, []
        return fresh

    def newest_start(self):
        return self.runs[-1][1] if self.runs else None

    def poll(self):
        """Read what was appended; returns the new run() records (take() hands them out)."""
        try:
            with open(self.path, "rb") as stream:
                stream.seek(self.offset)
                data = stream.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()      # a line the hook is still writing
        new_runs = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            event = record.get("event")
            if event in ("hello", "session"):
                self.static.append(record)
            elif event == "runs":
                self.source = record.get("source", self.source)
                new_runs.extend(tuple(run) for run in record.get("runs", ()) if len(run) == 5)
        self.runs.extend(new_runs)
        self.fresh.extend(new_runs)
        if self.runs:
            newest = self.runs[-1][1]
            while self.runs and self.runs[0][1] < newest - self.keep_seconds:
                self.runs.popleft()
        return new_runs

    def sessions(self):
        """{session id: session record}."""
        return {record.get("session"): record for record in self.static if record.get("event") == "session"}

    def write_window(self, directory, start, end, pid, tid_map=None):
        """The records a report of [start, end] needs, as a hook file in `directory`.
        `tid_map` turns the thread ids the process sees (its PID namespace's) into the host's, perf's."""
        tid_map = tid_map or {}
        runs = [[session, begin, duration, tid_map.get(tid, tid), kind]
                for session, begin, duration, tid, kind in self.runs if start <= begin <= end]
        with open(os.path.join(directory, f"hook-{pid}.jsonl"), "w") as stream:
            for record in self.static:
                stream.write(json.dumps(record) + "\n")
            if runs:
                record = {"event": "runs", "pid": pid, "fields": ["session", "start_mono", "duration_s", "tid", "kind"],
                          "runs": runs}
                if self.source is not None:     # the runs signal keys sessions on it
                    record["source"] = self.source
                stream.write(json.dumps(record) + "\n")
