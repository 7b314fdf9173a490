"""ortprof record: launch or attach to an ORT workload and record it."""
import click

from ..errors import InputError
from ..recording import profilers
from ..recording.recorder import FUTEX_METHOD_CHOICES, PROFILER_CHOICES, RecordOptions, Recorder
from .common import emit_json, stderr_console


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--pid", type=int, help="Attach to a running process instead of launching CMD.")
@click.option("-d", "--duration", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds to profile after warm-up (less if the workload exits).")
@click.option("--delay", type=click.FloatRange(min=0), help="Start profiling after this many seconds instead of "
              "waiting for the workload's first run() calls.")
@click.option("--warmup-runs", type=click.IntRange(min=1), default=5, show_default=True,
              help="run() calls of the first InferenceSession that end the warm-up.")
@click.option("--warmup-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Start profiling anyway when no run() was seen by then.")
@click.option("--profiler", type=click.Choice(PROFILER_CHOICES), default="auto", show_default=True,
              help="auto = perf when usable, else py-spy (which cannot see ORT's pool workers).")
@click.option("-F", "--frequency", type=click.IntRange(1, 100_000), default=profilers.DEFAULT_FREQUENCY, show_default=True,
              help="perf sampling frequency (Hz).")
@click.option("--call-graph", type=click.Choice(["dwarf", "fp"]), default="dwarf", show_default=True,
              help="fp only for builds with frame pointers (ortprof build keeps them).")
@click.option("--stack-size", type=click.IntRange(8, 65528), default=profilers.DEFAULT_STACK_SIZE, show_default=True,
              help="Bytes of user stack perf copies per sample for dwarf unwinding.")
@click.option("--no-futex", is_flag=True, help="Do not trace futex syscalls.")
@click.option("--futex-method", type=click.Choice(FUTEX_METHOD_CHOICES), default="auto", show_default=True,
              help="bpf = count futex calls and time per thread in the kernel (bpftrace, root) and sample their "
                   "stacks; perf = trace every call with its stack (costs more with spinning off); "
                   "auto = bpf when usable (`ortprof doctor --check futex-bpf`), else perf.")
@click.option("--futex-stack-period", type=click.IntRange(1, 1_000_000), default=profilers.FUTEX_STACK_PERIOD,
              show_default=True, help="With --futex-method bpf: perf copies the stack of one futex call in N.")
@click.option("--pyspy-rate", type=click.IntRange(1, 10_000), default=100, show_default=True, help="py-spy samples per second.")
@click.option("--cpus", type=float, help="Run CMD in a CPU-limited cgroup, like `docker run --cpus`.")
@click.option("--ort-build", metavar="CONFIG|MANIFEST",
              help="Run with an `ortprof build` (its site-packages first), e.g. Debug.")
@click.option("--ort-profile", is_flag=True, help="Also turn on ORT's own per-node profiler in every session "
              "(hot operators, names for the stripped wheel's kernels; a few us per run()).")
@click.option("--no-attach", is_flag=True, help="With --pid of a Python process: time run() by uprobes on its "
              "pybind11 dispatchers instead of attaching the startup hook's recording (nothing runs inside the "
              "process; sessions' options and models are then unknown; root).")
@click.option("--sched/--no-sched", default=None,
              help="Follow the scheduler in BPF (root): per-thread states, who held the CPU, throttled periods, "
                   "for the slow-run breakdown. Default: on when the compiled BPF program is built (`make setup`; "
                   "no measurable cost, docs/benchmarks.md), else off: --sched then uses bpftrace, which costs "
                   "p50 x1.4-2.9 and +6.5-10 CPU points with spinning off. `ortprof doctor --check sched-bpf` says which.")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Run directory (default .ortprof/runs/<time>-<name>).")
@click.option("-n", "--name", help="Name of the run (default: the script's name).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def command(command, pid, duration, delay, warmup_runs, warmup_timeout, profiler, frequency, call_graph,
            stack_size, no_futex, futex_method, futex_stack_period, pyspy_rate, cpus, ort_build, output, name, quiet, as_json,
            ort_profile, no_attach, sched):
    """Launch CMD (or attach to --pid) and record it into a run directory.

    \b
    ortprof record -- python app.py
    ortprof record --duration 20 --cpus 0.5 -- python -m ortprof.demo --rate 10
    ortprof record --pid 1234 --duration 5
    ortprof record --pid 1234 --no-attach

    Records perf samples with DWARF call graphs and futex syscalls (or py-spy),
    per-thread CPU from /proc, every InferenceSession's options and each run()'s
    latency (through a startup hook; your code is untouched) and the environment.
    Then run `ortprof report`.
    """
    if pid is None and not command:
        raise InputError("give a command after `--` (ortprof record -- python app.py) or --pid PID")
    if pid is not None and command:
        raise InputError("give either --pid or a command, not both")
    if no_attach and pid is None:
        raise InputError("--no-attach applies to --pid (a launched workload gets the startup hook)")
    if pid is not None and cpus is not None:
        raise InputError("--cpus applies to a launched command, not to --pid")
    if cpus is not None and cpus <= 0:
        raise InputError("--cpus must be positive")
    if duration <= 0:
        raise InputError("--duration must be positive")
    build = None
    extra_paths = []
    if ort_build:
        from ..builder.manifest import resolve_build
        build = resolve_build(ort_build)
        extra_paths.append(build["site_packages"])
    options = RecordOptions(
        command=list(command), pid=pid, name=name, output=output, duration=duration, delay=delay,
        warmup_runs=warmup_runs, warmup_timeout=warmup_timeout, profiler=profiler, frequency=frequency,
        call_graph=call_graph, stack_size=stack_size, futex=not no_futex, futex_method=futex_method,
        futex_stack_period=futex_stack_period, pyspy_rate=pyspy_rate,
        cpus=cpus, extra_python_paths=extra_paths, ort_build=build, progress=not quiet, stdout_for_json=as_json)
    options.ort_profile = ort_profile
    options.attach = not no_attach
    options.sched = sched
    console = stderr_console()
    run, manifest = Recorder(options, console).record()
    if as_json:
        emit_json(manifest.to_json())
    else:
        from ..render.record_summary import print_record_summary
        print_record_summary(run, manifest, console)
