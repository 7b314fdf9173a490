"""Errors a user can act on, and the exit codes that go with them.

Every command raises OrtprofError (or a subclass) for bad input or a broken
environment; the CLI prints its one-line message and exits with its code, so
no user ever sees a traceback for something that is not a bug.
"""

# Stable exit codes (documented in the README; CI scripts rely on them).
EXIT_OK = 0
EXIT_GATE = 1          # a --fail-on gate or a lint finding tripped
EXIT_USAGE = 2         # bad command line (click's own code)
EXIT_INPUT = 3         # bad path, run directory, model or file
EXIT_ENVIRONMENT = 4   # a tool is missing or not permitted
EXIT_WORKLOAD = 5      # the profiled workload failed / build failed
EXIT_INTERRUPTED = 130


class OrtprofError(Exception):
    """An error with a one-line message meant for the user."""

    exit_code = EXIT_INPUT

    def __init__(self, message, exit_code=None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(OrtprofError):
    exit_code = EXIT_INPUT


class EnvironmentProblem(OrtprofError):
    exit_code = EXIT_ENVIRONMENT


class WorkloadError(OrtprofError):
    exit_code = EXIT_WORKLOAD
