"""ortprof demo: the built-in request loop (same as `python -m ortprof.demo`)."""
import click


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args):
    """Run the demo encoder request loop (all-MiniLM-L6-v2 shape). `ortprof demo --help` for options.

    \b
    ortprof demo --rate 10 --duration 30
    ortprof record -- python -m ortprof.demo --rate 10
    """
    from ..demo.workload import main
    raise SystemExit(main(list(args)))
