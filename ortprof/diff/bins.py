"""Per-second bins across a profile's window: CPU used (from /proc or from perf samples) and
run() calls started, the units the CPU intervals resample."""
import numpy as np

from ..analysis.pipeline import stack_category


class Bins:
    """One-second bins over profile.span() (the last one stretched to the end)."""

    def __init__(self, profile):
        self.start, end = profile.span()
        seconds = max(end - self.start, 1e-3)
        self.count = max(1, int(round(seconds)))
        self.width = seconds / self.count
        self.profile = profile

    def index(self, t):
        return min(self.count - 1, max(0, int((t - self.start) / self.width)))

    def seconds(self):
        return np.full(self.count, self.width)

    def runs(self):
        counts = np.zeros(self.count)
        for run in self.profile.runs:
            counts[self.index(run.start)] += 1
        return counts

    def proc_cpu(self):
        """CPU seconds of the whole process per bin from /proc's 10 Hz series, or None without one."""
        used = np.zeros(self.count)
        seen = False
        for points in self.profile.thread_cpu.values():
            for (t0, c0), (t1, c1) in zip(points, points[1:]):
                if t1 <= self.start or c1 < c0:
                    continue
                used[self.index(t1)] += c1 - c0
                seen = True
        return used if seen else None

    def sampled_cpu(self, key):
        """{key: CPU seconds per bin} from perf samples; key(thread, stack_id) names the row
        (a category, a role)."""
        rows = {}
        profile = self.profile
        for thread in profile.threads.values():
            keys = {}
            for t, stack_id, ns in zip(thread.times, thread.stack_ids, thread.weights_ns):
                name = keys.get(stack_id)
                if name is None:
                    name = keys[stack_id] = key(thread, stack_id)
                row = rows.get(name)
                if row is None:
                    row = rows[name] = np.zeros(self.count)
                row[self.index(t)] += ns / 1e9
        return rows


def by_category(profile):
    return lambda thread, stack_id: stack_category(profile, stack_id, thread.role)


def by_role(thread, _stack_id):
    return thread.role
