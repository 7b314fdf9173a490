"""Small pieces every command shares: consoles and JSON output."""
import json
import sys

from rich.console import Console


def stderr_console():
    """Progress and messages go to stderr, so stdout stays clean for --json and pipes."""
    return Console(stderr=True, highlight=False)


def stdout_console():
    return Console(highlight=False)


def emit_json(document):
    json.dump(document, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
