"""The click layer: one module per command under ortprof.commands.

Commands are imported lazily so `ortprof --help` stays fast and does not pull
in onnxruntime or numpy.
"""
import importlib
import sys

import click

from . import __version__
from .errors import EXIT_INTERRUPTED, OrtprofError

# command name -> module under ortprof.commands exposing `command`
COMMANDS = {
    "record": "record",
    "report": "report",
    "diff": "diff",
    "export": "export",
    "runs": "runs",
    "demo": "demo",
    "build": "build",
    "builds": "builds",
    "lint": "lint",
    "doctor": "doctor",
    "sweep": "sweep",
    "agent": "agent",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        module_name = COMMANDS.get(name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(f"ortprof.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ortprof.commands.{module_name}":
                return None  # command not shipped yet
            raise
        return module.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ortprof")
def cli():
    """Profile ONNX Runtime inference on Linux and explain where the CPU goes.

    \b
    Typical loop:
      ortprof doctor                      # can this machine profile?
      ortprof record -- python app.py     # launch + profile a workload
      ortprof report                      # diagnosis of the latest run
    """


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="ortprof", standalone_mode=False)
    except OrtprofError as exc:
        click.echo(f"ortprof: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("ortprof: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("ortprof: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(0)
