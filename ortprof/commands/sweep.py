"""ortprof sweep: run a workload under a matrix of ORT thread settings and
recommend the cheapest one for the latency a user can accept."""
import click

from ..errors import InputError

DEFAULT_DURATION = 3.0
DEFAULT_REPEAT = 3
DEFAULT_CI_TARGET = 1.0
DEFAULT_MAX_REPEAT = 30
DEFAULT_TIME_BUDGET = 110.0


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--model", type=click.Path(dir_okay=False),
              help="Sweep the built-in request loop on this model (inputs synthesized from its signature).")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=DIMS",
              help="Built-in loop: a symbolic dimension (sequence=128) or an input's shape (input_ids=1x128); "
                   "unresolved dynamic dimensions are 1. Repeatable.")
@click.option("--python", metavar="PY", help="Built-in loop: the Python (venv) to run it with (default: this one).")
@click.option("--threads", metavar="N,...", help="intra_op_num_threads values [default: physical cores and the powers of two below].")
@click.option("--allow-spinning", metavar="1,0", help="session.intra_op.allow_spinning values [default: 1,0].")
@click.option("--spin-duration-us", metavar="US,...", help="session.intra_op.spin_duration_us values (-1 = legacy).")
@click.option("--dynamic-block-base", metavar="N,...", help="session.dynamic_block_base values (0 = off).")
@click.option("--inter-op", metavar="seq|N,...",
              help="Execution mode: seq = sequential, N = parallel with N inter-op threads.")
@click.option("--cpus", metavar="CPUS,...",
              help="CPU quotas to run under (cgroup, like docker --cpus); none = no quota.")
@click.option("--rate", metavar="RPS,...", help="Built-in loop: requests per second, 0 = closed loop [default: 10].")
@click.option("-d", "--duration", type=float, default=DEFAULT_DURATION, show_default=True,
              help="Seconds measured per run, after the warm-up.")
@click.option("-r", "--repeat", type=int, default=DEFAULT_REPEAT, show_default=True,
              help="Runs per configuration (fresh processes, shuffled order); 2+ gives confidence intervals.")
@click.option("--ci-target", type=float, default=DEFAULT_CI_TARGET, show_default=True, metavar="POINTS",
              help="After --repeat rounds, rerun configurations whose CPU% 95% interval is wider than "
                   "+-POINTS (0 = exactly --repeat runs).")
@click.option("--max-repeat", type=int, default=DEFAULT_MAX_REPEAT, show_default=True,
              help="Most runs per configuration with --ci-target.")
@click.option("--time-budget", type=float, default=DEFAULT_TIME_BUDGET, show_default=True, metavar="SECONDS",
              help="Runs for --ci-target only start while the sweep has been going for less than this "
                   "(the --repeat rounds always run).")
@click.option("--warmup-runs", type=int, default=5, show_default=True,
              help="run() calls discarded at the start of every run.")
@click.option("--warmup-timeout", type=float, default=60.0, show_default=True,
              help="A run fails when the warm-up has not ended by then.")
@click.option("--latency-budget", metavar="FACTORx|MS",
              help="p95 the recommendation must keep: a factor of the defaults' p95 (1.25x) or milliseconds "
                   "(5ms).  [default: 1.25x; with --show: the sweep's own]")
@click.option("--seed", type=int, help="Seed of the shuffled run order (recorded in sweep.json).")
@click.option("--show", "show", metavar="DIR", help="Print a finished (or interrupted) sweep again.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema ortprof.sweep/1).")
@click.option("--csv", "as_csv", is_flag=True, help="Print the table as CSV.")
@click.option("--plot", metavar="FILE.png|svg", help="Write a CPU vs p95 scatter plot with the Pareto front.")
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Sweep directory (default .ortprof/sweeps/<time>-<name>).")
@click.option("-n", "--name", help="Name of the sweep (default: the model's or script's name).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def command(command, model, shapes, python, threads, allow_spinning, spin_duration_us, dynamic_block_base,
            inter_op, cpus, rate, duration, repeat, ci_target, max_repeat, time_budget,
            warmup_runs, warmup_timeout, latency_budget, seed, show,
            as_json, as_csv, plot, output, name, quiet):
    """Run a workload once per combination of ORT thread settings and find the
    one with the lowest CPU cost whose p95 latency stays within budget.

    \b
    ortprof sweep --model model.onnx --shape sequence=128 --rate 10
    ortprof sweep --cpus 0.5,1 -- python app.py
    ortprof sweep --show .ortprof/sweeps/20250101-120000-model --latency-budget 5ms

    Settings are injected into every InferenceSession by a startup hook (your
    code is untouched, what it sets is overridden) and read back from ORT.

    \b
    Exit codes: 0 done, 3 bad input (or an axis the workload's ORT does not
    know), 4 --cpus not possible here, 5 every run failed, 130 interrupted
    (finished runs are kept and printed).
    """
    from ..sweep import output as sweep_output
    from ..sweep import recommend, results
    from ..sweep.driver import Sweep, SweepOptions, failure_of
    from .common import emit_json, stderr_console, stdout_console

    if as_json and as_csv:
        raise InputError("give --json or --csv, not both")
    budget = recommend.parse_budget(latency_budget or recommend.DEFAULT_BUDGET)
    if plot:
        sweep_output.check_plot_path(plot)
    axes = {"threads": threads, "allow_spinning": allow_spinning, "spin_duration_us": spin_duration_us,
            "dynamic_block_base": dynamic_block_base, "inter_op": inter_op, "cpus": cpus, "rate": rate}
    if show:
        if command or model or any(value is not None for value in axes.values()):
            raise InputError("--show DIR prints a finished sweep; it takes no command, --model or axes")
        document = results.load(show)
        if latency_budget is None:
            stored = (document.get("latency_budget") or {}).get("text")
            budget = recommend.parse_budget(stored or recommend.DEFAULT_BUDGET)
        document = results.apply_budget(document, budget)
    else:
        sweep = Sweep(SweepOptions(command=list(command), model=model, python=python, shapes=list(shapes),
                                   axes=axes, duration=duration, repeat=repeat, ci_target=ci_target,
                                   max_repeat=max_repeat, time_budget=time_budget, warmup_runs=warmup_runs,
                                   warmup_timeout=warmup_timeout, seed=seed, budget=budget, name=name,
                                   output=output, progress=not quiet), stderr_console())
        sweep.prepare()
        document = sweep.run()
        (sweep.directory / results.CSV_NAME).write_text(sweep_output.to_csv(document))
    if plot:
        sweep_output.plot(document, plot)
        stderr_console().print(f"ortprof: plot written to {plot}")
    if as_json:
        emit_json(document)
    elif as_csv:
        click.echo(sweep_output.to_csv(document), nl=False)
    else:
        sweep_output.render(document, stdout_console())
    if document.get("status") == "interrupted" and not show:
        raise KeyboardInterrupt
    failure = None if show else failure_of(document)
    if failure is not None:
        raise failure
