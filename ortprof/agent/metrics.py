"""Prometheus metrics of the agent's windows (prometheus_client, own registry).

Per process (labels service, pid, container, pod):
  ortprof_spin_cpu_ratio                 spin-wait (pool + caller) share of the process's CPU, last window
  ortprof_cpu_seconds_total{category}    CPU seconds perf saw per category, summed over windows
  ortprof_profiled_seconds_total         seconds of windows: rate(cpu)/rate(profiled) = cores per category
  ortprof_futex_calls_per_second         last window, only with --futex
  ortprof_cgroup_throttled_seconds_total CFS throttling of the process's cgroup (all the time, not only windows)
  ortprof_pool_threads / ortprof_usable_cores / ortprof_cpu_quota_cores
  ortprof_finding{id,severity}           1 while a finding holds in the last window, 0 after
  ortprof_run_duration_seconds{session,model,options}
                                         histogram of run() latency: every run the startup hook timed
                                         (launched with it, or attached: --attach), the runs of the windows
                                         timed by uprobes (C API clients, Python's pybind11 dispatchers);
                                         labels from sessions.py (session "model.onnx@0x55d0c3a0",
                                         "unknown@0x7f3a..."); past 64 session labels a process's runs go
                                         to session "other"
Agent: ortprof_agent_windows_total{outcome}, ortprof_agent_pushes_total{outcome},
  ortprof_agent_spool_profiles, ortprof_agent_spool_dropped_total, ortprof_agent_cpu_seconds_total
  (the agent and its perf children).
"""
import resource

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily

from ..model.report import CATEGORIES
from .sessions import SessionLabels

PROCESS_LABELS = ("service", "pid", "container", "pod")
# A process that creates session after session (one per request) must not create series without
# end: past this many session labels its runs go to session="other".
MAX_SESSION_LABELS = 64
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class _AgentCpu:
    """CPU of the agent itself plus its waited-for children (perf record, perf script)."""

    def collect(self):
        metric = CounterMetricFamily("ortprof_agent_cpu_seconds", "CPU seconds of the agent and its perf children")
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        metric.add_metric([], own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime)
        yield metric


class AgentMetrics:
    def __init__(self):
        self.registry = registry = CollectorRegistry()
        labels = PROCESS_LABELS
        self.spin = Gauge("ortprof_spin_cpu_ratio", "Spin-wait share of the process's CPU in the last window",
                          labels, registry=registry)
        self.cpu = Counter("ortprof_cpu_seconds", "CPU seconds perf sampled, by category, over all windows",
                           labels + ("category",), registry=registry)
        self.profiled = Counter("ortprof_profiled_seconds", "Seconds of profiling windows", labels, registry=registry)
        self.futex = Gauge("ortprof_futex_calls_per_second", "futex calls per second in the last window (--futex)",
                           labels, registry=registry)
        self.throttled = Counter("ortprof_cgroup_throttled_seconds", "CFS throttled time of the process's cgroup",
                                 labels, registry=registry)
        self.pool = Gauge("ortprof_pool_threads", "ORT intra-op pool threads (workers + caller)", labels,
                          registry=registry)
        self.usable = Gauge("ortprof_usable_cores", "Cores the process may run on (CPU affinity)", labels,
                            registry=registry)
        self.quota = Gauge("ortprof_cpu_quota_cores", "CPU quota of the process's cgroup in cores", labels,
                           registry=registry)
        self.finding = Gauge("ortprof_finding", "1 while the finding holds in the last window", labels +
                             ("id", "severity"), registry=registry)
        self.latency = Histogram("ortprof_run_duration_seconds",
                                 "run() latency timed by ortprof's startup hook (launched or attached) or uprobes",
                                 labels + ("session", "model", "options"), buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self.info = Gauge("ortprof_process_info", "An ORT process the agent follows", labels +
                          ("ort_version", "ort_module"), registry=registry)
        self.windows = Counter("ortprof_agent_windows", "Profiling windows by outcome", ("outcome",),
                               registry=registry)
        self.pushes = Counter("ortprof_agent_pushes", "Push attempts to Pyroscope by outcome", ("outcome",),
                              registry=registry)
        self.spooled = Gauge("ortprof_agent_spool_profiles", "Profiles waiting in the spool", registry=registry)
        self.dropped = Counter("ortprof_agent_spool_dropped", "Profiles dropped from the full spool",
                               registry=registry)
        registry.register(_AgentCpu())
        self._findings = {}          # target key -> {(id, severity)}
        self._throttle_base = {}     # target key -> throttled_usec
        self._series = {}            # target key -> {(metric, label values)} it has, to remove them
        self._sessions = {}          # target key -> session labels its latency histogram has

    def serve(self, port, addr="0.0.0.0"):
        return start_http_server(port, addr=addr, registry=self.registry)

    @staticmethod
    def label_values(target):
        return (target.service, str(target.pid), target.container or "", target.pod or "")

    def _of(self, metric, target, *extra):
        """`metric`'s child for `target` (and `extra` label values), remembered for forget()."""
        values = self.label_values(target) + tuple(extra)
        self._series.setdefault(target.key, set()).add((metric, values))
        return metric.labels(*values)

    def track(self, target):
        self._of(self.info, target, target.ort_version or "", target.ort_module).set(1)

    def forget(self, target):
        """A process that is gone: its series disappear."""
        for metric, values in self._series.pop(target.key, ()):
            try:
                metric.remove(*values)
            except KeyError:
                pass
        self._findings.pop(target.key, None)
        self._throttle_base.pop(target.key, None)
        self._sessions.pop(target.key, None)

    def observe_runs(self, target, runs, labels=None):
        """`runs`: (session, start, duration, tid, kind); `labels`: session number -> its
        sessions.SessionLabels (default: the number, model and options unknown)."""
        labels = labels or {}
        known = self._sessions.setdefault(target.key, set())
        for session, _start, duration, _tid, _kind in runs:
            label = labels.get(session) or SessionLabels.of_number(session)
            if label.session not in known:
                if len(known) >= MAX_SESSION_LABELS:
                    label = SessionLabels("other", "", "")
                known.add(label.session)
            self._of(self.latency, target, label.session, label.model, label.options).observe(duration)

    def throttling(self, target, stat):
        """Add the throttled time since the last reading of the cgroup's cpu.stat."""
        if not stat or stat.get("throttled_usec") is None:
            return
        now = stat["throttled_usec"]
        before = self._throttle_base.get(target.key)
        self._throttle_base[target.key] = now
        if before is not None and now >= before:
            self._of(self.throttled, target).inc((now - before) / 1e6)
        elif before is None:
            self._of(self.throttled, target)   # the series exists from the first reading

    def window(self, target, report, usable_cores=None):
        totals = report.totals
        seconds = report.window_seconds or 0
        self._of(self.profiled, target).inc(seconds)
        for category in CATEGORIES:
            pct = getattr(totals, f"{category}_pct", None) or 0.0
            self._of(self.cpu, target, category).inc(pct / 100 * seconds)
        if totals.cpu_pct:
            spin = (totals.spin_pct or 0) + (totals.caller_spin_pct or 0)
            self._of(self.spin, target).set(spin / totals.cpu_pct)
        if report.futex.recorded and report.futex.calls_per_s is not None:
            self._of(self.futex, target).set(report.futex.calls_per_s)
        if report.pool_threads:
            self._of(self.pool, target).set(report.pool_threads)
        if usable_cores:
            self._of(self.usable, target).set(usable_cores)
        if report.cgroup.quota_cpus:
            self._of(self.quota, target).set(report.cgroup.quota_cpus)
        holding = {(finding.id, finding.severity) for finding in report.findings}
        for key in self._findings.get(target.key, set()) - holding:
            self._of(self.finding, target, *key).set(0)
        for key in holding:
            self._of(self.finding, target, *key).set(1)
        self._findings[target.key] = self._findings.get(target.key, set()) | holding

    def pushed(self, outcome):
        self.pushes.labels(outcome).inc()

