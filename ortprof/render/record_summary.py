"""The short summary `ortprof record` prints when it is done."""
from rich.table import Table

from ..analysis.latency import session_latencies
from ..hook import read_hook_records
from ..recording import rundir
from ..signals.cgroup import CgroupRecord
from ..signals.runs import HOOK_DIR
from ..signals.threads import ThreadsSummary
from .terminal import threads_and_spinning


def print_record_summary(run, manifest, console):
    """`manifest`: the RunManifest record wrote."""
    seconds = manifest.window_seconds
    threads = manifest.section("threads", ThreadsSummary) or ThreadsSummary()
    console.print(f"[bold]ortprof:[/] recorded [cyan]{run.path}[/] "
                  f"({seconds or 0:.1f} s, status {manifest.status})")
    if manifest.stopped_by_ortprof:
        console.print(f"  [dim]the workload was stopped after the window; what it printed from then on is in "
                      f"{run.file(rundir.WORKLOAD_LOG)}[/]")
    for name, profiler in manifest.profilers.items():
        console.print(f"  {name}: {profiler.bytes / 1e6:.1f} MB -> {profiler.output}")
    if threads.process_cpu_pct is not None:
        console.print(f"  process CPU: {threads.process_cpu_pct:.1f}% of one core "
                      f"({len(threads.window_cpu_pct)} thread(s))")
    sessions = session_latencies(read_hook_records(run.file(HOOK_DIR)), manifest.window_span)
    if sessions:
        table = Table(box=None, pad_edge=False)
        for column in ("session", "runs", "p50 ms", "p95 ms", "intra threads", "spinning"):
            table.add_column(column, justify="right")
        for latency in sessions:
            summary = latency.summary(seconds)
            options = summary["options"]
            table.add_row(str(summary["session"]), str(summary["runs"]), _fmt(summary["p50_ms"]),
                          _fmt(summary["p95_ms"]),
                          *threads_and_spinning(options, summary["options_known"], "1 (default)"))
        console.print(table)
    cgroup = manifest.section("cgroup", CgroupRecord) or CgroupRecord()
    before, after = cgroup.stat_before, cgroup.stat_after
    if before and after and after.get("nr_throttled") is not None:
        console.print(f"  cgroup throttled: {after['nr_throttled'] - before['nr_throttled']} periods, "
                      f"{(after['throttled_usec'] - before['throttled_usec']) / 1000:.1f} ms")
    console.print(f"next: [bold]ortprof report {run.path}[/]")


def _fmt(value):
    return "-" if value is None else f"{value:.2f}"
