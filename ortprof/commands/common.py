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


def analyze_run_with_status(run_spec, with_ort_symbols=True, quiet=False):
    """(Profile, Report) of a run argument, with a spinner on stderr while perf data is decoded."""
    import contextlib

    from ..analysis.report import build_report
    from ..recording.rundir import resolve_run
    run_dir = resolve_run(run_spec)
    status = contextlib.nullcontext() if quiet else stderr_console().status("decoding perf data", spinner="dots")
    with status:
        return build_report(run_dir, with_ort_symbols=with_ort_symbols)


class OutputTarget:
    """One format going to one file (or stdout), opened up front so a bad path fails before decoding."""

    def __init__(self, exporter, path):
        self.exporter = exporter
        self.path = path            # None: stdout
        self.stream = None

    @property
    def name(self):
        return self.exporter.name

    def open(self):
        from ..errors import InputError
        if self.path is None:
            return
        try:
            self.stream = open(self.path, "wb" if self.exporter.binary else "w")
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write ({exc.strerror or exc})")

    def write(self, profile, report):
        from ..errors import InputError
        stream = self.stream or (sys.stdout.buffer if self.exporter.binary else sys.stdout)
        written = False
        try:
            self.exporter.write(profile, report, stream)
            stream.flush()
            written = True
        except OSError as exc:
            raise InputError(f"{self.path or 'stdout'}: cannot write ({exc.strerror or exc})")
        finally:
            if self.stream is not None:
                self.stream.close()
                if not written:   # no half-written or empty file left behind
                    os.unlink(self.path)


def format_targets(specs, **options):
    """OutputTargets for 'NAME[=FILE]' specs; at most one may go to stdout ('-' or no file)."""
    from .. import exporters
    from ..errors import InputError
    targets = []
    for spec in specs:
        name, path = exporters.parse_format_spec(spec)
        console = stdout_console() if name == "terminal" and path in (None, "-") else None
        exporter = exporters.get(name).configure(console=console, **options)
        targets.append(OutputTarget(exporter, None if path in (None, "-") else path))
    to_stdout = [target.name for target in targets if target.path is None]
    if len(to_stdout) > 1:
        raise InputError(f"{' and '.join(to_stdout)} both want stdout: give all but one a file (--format NAME=FILE)")
    for target in targets:
        target.open()
    return targets


def write_targets(targets, profile, report):
    for target in targets:
        target.write(profile, report)
