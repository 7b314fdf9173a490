"""ortprof agent: continuous profiling of every ORT process on a host."""
import re
import socket
import sys

import click

from ..errors import InputError
from ..recording import profilers


@click.command()
@click.option("--interval", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds from one window's start to the next.")
@click.option("--window", "window_seconds", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
              help="Seconds each window records.")
@click.option("--pid", "pids", type=int, multiple=True, help="Profile only this process (repeatable).")
@click.option("--match", metavar="REGEX", help="Profile only ORT processes whose command line matches.")
@click.option("--service", help="service_name label (default: from each process's command).")
@click.option("--host", envvar="ORTPROF_AGENT_HOST", default=socket.gethostname, show_default="hostname",
              help="host label (Kubernetes: the node name, from the downward API).")
@click.option("--pyroscope", "pyroscope_url", metavar="URL", envvar="ORTPROF_PYROSCOPE_URL",
              help="Push each window as pprof to this Pyroscope (e.g. http://pyroscope:4040).")
@click.option("--basic-auth-user", envvar="ORTPROF_PYROSCOPE_USER", help="Basic-auth user for Pyroscope.")
@click.option("--basic-auth-password", envvar="ORTPROF_PYROSCOPE_PASSWORD",
              help="Basic-auth password (better from $ORTPROF_PYROSCOPE_PASSWORD).")
@click.option("--tenant", envvar="ORTPROF_PYROSCOPE_TENANT", help="X-Scope-OrgID header (multi-tenant Pyroscope).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Serve Prometheus metrics on this port.")
@click.option("--metrics-addr", default="0.0.0.0", show_default=True, help="Address the metrics port listens on.")
@click.option("--work-dir", default="/tmp/ortprof-agent", show_default=True, envvar="ORTPROF_AGENT_DIR",
              help="Spool and per-window scratch files (a writable volume).")
@click.option("--spool-max-mb", type=click.FloatRange(min=0.01), default=64.0, show_default=True,
              help="Bound of the on-disk queue of unsent profiles; the oldest go first.")
@click.option("-F", "--frequency", type=click.IntRange(1, 10_000), default=49, show_default=True,
              help="perf sampling frequency (Hz).")
@click.option("--stack-size", type=click.IntRange(8, 65528), default=profilers.DEFAULT_STACK_SIZE, show_default=True,
              help="Bytes of user stack perf copies per sample.")
@click.option("--futex", is_flag=True, help="Also trace futex calls (costs more on services that do not spin).")
@click.option("--nice", type=click.IntRange(0, 19), default=10, show_default=True,
              help="Niceness of the agent and its perf.")
@click.option("--log-format", type=click.Choice(["json", "logfmt"]), default="json", show_default=True,
              help="Log lines on stderr.")
@click.option("--attach", is_flag=True,
              help="Attach the startup hook's recording to Python processes not launched with it (gdb, ptrace): "
                   "their sessions' models and options; detached when the agent stops.")
@click.option("--once", is_flag=True, help="Record one window, print each process's report and exit.")
def command(interval, window_seconds, pids, match, service, host, pyroscope_url, basic_auth_user,
            basic_auth_password, tenant, metrics_port, metrics_addr, work_dir, spool_max_mb, frequency, stack_size,
            futex, nice, log_format, attach, once):
    """Profile every ORT process on this host continuously (foreground).

    \b
    ortprof agent --once                                  # one 10 s window, reports printed
    ortprof agent --pyroscope http://pyroscope:4040 --metrics-port 9464
    ortprof agent --match 'serve\\.py' --interval 30 --window 5

    Finds processes with ORT's native module mapped (host and containers), and
    every --interval records a --window of each with perf at a low frequency.
    Each window becomes a report (roles, categories, findings), Prometheus
    metrics (run() latency of every ORT process: the startup hook's records,
    or uprobes; --attach for Python sessions' models and options) and a pprof
    profile pushed to Pyroscope. Logs are JSON lines (or logfmt) on stderr;
    SIGTERM stops it cleanly.
    """
    from ..agent.logs import StructuredLog
    from ..agent.runner import Agent, AgentOptions
    from ..agent.window import WindowOptions
    if window_seconds >= interval and not once:
        raise InputError(f"--window ({window_seconds:g} s) must be shorter than --interval ({interval:g} s)")
    try:
        pattern = re.compile(match) if match else None
    except re.error as error:
        raise InputError(f"--match {match!r}: not a regular expression ({error})")
    if basic_auth_password and not basic_auth_user:
        raise InputError("--basic-auth-password needs --basic-auth-user")
    options = AgentOptions(
        interval=interval, window=WindowOptions(window_seconds, frequency, stack_size, futex), pids=tuple(pids),
        match=pattern, service=service, host=host, pyroscope=pyroscope_url, user=basic_auth_user,
        password=basic_auth_password, tenant=tenant, metrics_port=metrics_port, metrics_addr=metrics_addr,
        work_dir=work_dir, spool_max_bytes=int(spool_max_mb * (1 << 20)), nice=nice, attach=attach)
    agent = Agent(options, StructuredLog(sys.stderr, log_format))
    if not once:
        sys.exit(agent.run())
    _print_reports(agent.once())


def _print_reports(results):
    from ..exporters import get
    from .common import stdout_console
    console = stdout_console()
    terminal = get("terminal").configure(console=console)
    for result in results:
        target = result.target
        where = f", container {target.container}" if target.container else ""
        console.rule(f"pid {target.pid} ({target.service}{where}): {result.seconds:.1f} s window")
        if result.error or result.report is None:
            console.print(f"no report: {result.error}")
            continue
        result.report.run = f"pid {target.pid}, one agent window"   # its temporary run directory is gone
        terminal.write(result.profile, result.report, sys.stdout)
