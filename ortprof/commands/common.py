"""Small pieces every command shares: consoles and JSON output."""
import json
import os
import sys

from rich.console import Console


def stderr_console():
    """Progress and messages go to stderr, so stdout stays clean for --json and pipes."""
    return Console(stderr=True, highlight=False)


def stdout_console():
    # Piped or captured output gets a width that fits the report's tables.
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=140)
    return console


def emit_json(document):
    json.dump(document, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
