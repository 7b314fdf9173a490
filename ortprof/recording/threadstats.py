"""Per-thread CPU time from /proc (via psutil) at a fixed rate, as a timeline."""
import csv
import threading
import time

import psutil

HEADER = ("mono", "tid", "user_s", "system_s")


class ThreadCpuSampler:
    """Background sampler writing `mono,tid,user_s,system_s` rows to a CSV file.

    Cumulative times per TID (not deltas), so a reader can take any window.
    Thread names are read once per new TID (ORT's workers keep the process comm).
    """

    def __init__(self, pid, csv_path, hz=10.0):
        self.pid = pid
        self.csv_path = csv_path
        self.interval = 1.0 / hz
        self.hz = hz
        self.thread_names = {}
        self._stop = threading.Event()
        self._thread = None
        self.samples = 0
        self.error = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="ortprof-thread-cpu", daemon=True)
        self._thread.start()
        return self

    def retarget(self, pid):
        self.pid = pid

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self):
        try:
            self._sample_to_file()
        except OSError as exc:   # disk full: keep what was written, stop sampling
            self.error = f"thread CPU sampling stopped: {exc.strerror or exc}"

    def _sample_to_file(self):
        with open(self.csv_path, "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(HEADER)
            next_due = time.monotonic()
            while not self._stop.is_set():
                if not self.sample_once(writer):
                    break
                stream.flush()
                next_due += self.interval
                self._stop.wait(max(0.0, next_due - time.monotonic()))

    def sample_once(self, writer):
        try:
            process = psutil.Process(self.pid)
            now = time.monotonic()
            threads = process.threads()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return False
        for thread in threads:
            writer.writerow((f"{now:.4f}", thread.id, f"{thread.user_time:.3f}", f"{thread.system_time:.3f}"))
            if thread.id not in self.thread_names:
                self.thread_names[thread.id] = _thread_name(self.pid, thread.id)
        self.samples += 1
        return True


def _thread_name(pid, tid):
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as stream:
            return stream.read().strip()
    except OSError:
        return None


def read_thread_cpu(csv_path, start=None, end=None):
    """{tid: cpu seconds} used within [start, end] (monotonic), from the sampler's CSV.

    A thread's use is its last cumulative value in the window minus its value
    at the window's start (or its first value, for threads born inside it).
    """
    return {tid: max(0.0, points[-1][1] - points[0][1])
            for tid, points in read_thread_cpu_series(csv_path, start, end).items()
            if start is None or points[-1][0] >= start}


def read_thread_cpu_series(csv_path, start=None, end=None):
    """{tid: [(monotonic s, cumulative CPU s), ...]} within [start, end], for timelines.
    One row before the window is kept per thread, so the first interval has a base."""
    series = {}
    try:
        with open(csv_path, newline="") as stream:
            for row in csv.DictReader(stream):
                try:
                    mono = float(row["mono"])
                    tid = int(row["tid"])
                    total = float(row["user_s"]) + float(row["system_s"])
                except (TypeError, ValueError, KeyError):
                    continue  # a torn last row
                if end is not None and mono > end:
                    continue
                points = series.setdefault(tid, [])
                if start is not None and mono < start:
                    points[:] = [(mono, total)]
                    continue
                points.append((mono, total))
    except FileNotFoundError:
        return {}
    return series
