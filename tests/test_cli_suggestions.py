"""Every `ortprof ...` command line that ortprof suggests (doctor's fixes, error
messages, report remedies, lint fixes, help examples) parses with the real CLI:
the subcommand exists and so does every option it names."""
import ast
import os
import re
import shlex
from pathlib import Path

import click
import pytest

from ortprof.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "ortprof"
# any word in quotes (an unknown subcommand there is a bad suggestion); known ones on a line of their own
SUBCOMMAND = r"ortprof [a-z][a-z-]*"
KNOWN_SUBCOMMAND = "ortprof (?:" + "|".join(map(re.escape, COMMANDS)) + r")\b"

# Where a suggested command line is delimited in a message:
# `ortprof build --config Debug`, 'ortprof record -- CMD', or a line of its own
# (help examples, report remedies), possibly followed by "# comment".
QUOTED = [re.compile(rf"`({SUBCOMMAND}[^`]*)`"), re.compile(rf"'({SUBCOMMAND}[^']*)'")]
OWN_LINE = re.compile(rf"^\s*({KNOWN_SUBCOMMAND}(?: [^#]*)?)(?:#.*)?$")
PLACEHOLDER = "PLACEHOLDER"


def string_texts(tree):
    """(line, text) of every string in a module; f-string fields become PLACEHOLDER."""
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [value.value if isinstance(value, ast.Constant) else PLACEHOLDER for value in node.values]
            yield node.lineno, "".join(parts)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def suggested_command_lines():
    """{(file:line, command line)} for every ortprof command line the source suggests."""
    found = set()
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(ROOT)
        for lineno, text in string_texts(tree):
            text = re.sub(r"\[/?[a-z ]*\]", "", text)   # rich markup around commands
            candidates = [m.group(1) for pattern in QUOTED for m in pattern.finditer(text)]
            candidates += [m.group(1) for line in text.splitlines() for m in [OWN_LINE.match(line)] if m]
            for candidate in candidates:
                for command in re.split(r"&&|\|", candidate):   # shell pipelines: each ortprof part
                    command = command.strip().rstrip(".")
                    command = command.split(" > ")[0].strip()
                    prose = ": " in command or "[OPTIONS]" in command or "..." in command   # titles, usage
                    if command.startswith("ortprof ") and not prose:
                        found.add((f"{where}:{lineno}", command))
    return sorted(found)


SUGGESTIONS = suggested_command_lines()


def parse(command, name, args):
    """Parse `args` as the real CLI would; descend into subcommands."""
    ctx = command.make_context(name, list(args), resilient_parsing=False)
    if isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if rest and rest[0] in command.list_commands(ctx):
            sub = command.get_command(ctx, rest[0])
            return parse(sub, rest[0], rest[1:])
        if rest and not command.invoke_without_command:
            raise click.UsageError(f"no such command {rest[0]!r}", ctx)
    return ctx


def test_the_source_suggests_command_lines_of_every_kind():
    commands = {command for _, command in SUGGESTIONS}
    assert any(c.startswith("ortprof build --config") for c in commands)       # messages
    assert any(c.startswith("ortprof record --profiler py-spy") for c in commands)   # report remedies
    assert any(c.startswith("ortprof lint PLACEHOLDER --fix") for c in commands)     # lint fixes
    assert any(c.startswith("ortprof doctor --check") for c in commands)       # doctor's own fixes


def test_bad_suggestions_are_caught():
    with pytest.raises(click.NoSuchOption):
        parse(cli, "ortprof", shlex.split("build --output DIR"))
    with pytest.raises(click.UsageError):
        parse(cli, "ortprof", shlex.split("no-such-command --x"))


@pytest.mark.parametrize("where,command", SUGGESTIONS, ids=[f"{w} {c}" for w, c in SUGGESTIONS])
def test_suggested_command_line_parses(where, command):
    args = shlex.split(command.replace("~", os.path.expanduser("~")))[1:]
    try:
        parse(cli, "ortprof", args)
    except click.exceptions.Exit:
        pass   # --help, --version
    except click.MissingParameter:
        pass   # a mention of the command ("`ortprof lint`"), not a whole command line
    except click.BadParameter as exc:
        # a placeholder (DIR, MODEL.onnx, an f-string field) is no existing file nor a valid
        # choice: the option itself exists
        if "does not exist" not in str(exc) and PLACEHOLDER not in str(exc):
            raise AssertionError(f"{where}: `{command}`: {exc.format_message()}")
    except click.BadOptionUsage as exc:
        # a mention of an option ("`ortprof sweep --model`"): the option exists, its value is left out
        if not (args and exc.option_name == args[-1] and "requires an argument" in str(exc)):
            raise AssertionError(f"{where}: `{command}`: {exc.format_message()}")
    except click.UsageError as exc:
        raise AssertionError(f"{where}: `{command}`: {exc.format_message()}")
