"""Reading ORT's build output: configure, ninja's [x/N] progress, the first error, an OOM-killed compiler.

During configure, CMake's FetchContent runs a small ninja sub-build per
dependency ("[1/9] Creating directories for 'eigen-populate'" ... "[9/9]
Completed"). Those count as configure; the compile's progress is the main
ninja build that starts once the build files of the build directory itself
are written.
"""
import re
import time
from collections import deque

from .eta import CompileEta, earlier_build, format_duration, read_build_plan

NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]\s")
MAKE_STEP = re.compile(r"^\[\s*(\d+)%\]\s")            # when CMake generated Makefiles instead
SUBBUILD_STEP = re.compile(r"'([\w.+-]+)-populate'")      # a FetchContent sub-build's step
POPULATING = re.compile(r"^-- Populating (\S+)")
BUILD_FILES_WRITTEN = re.compile(r"^-- Build files have been written to: (.+?)\s*$")
COMPILE_START = re.compile(r"\bBuilding targets for \w+ configuration|cmake(?:\.exe)? --build ")
FAILED = re.compile(r"^FAILED: ")
# gcc/clang when the kernel's OOM killer took the compiler (or the linker)
OOM_KILLED = re.compile(r"Killed signal terminated program|internal compiler error: Killed|"
                        r"terminated with signal 9|fatal error: Killed")
ERROR_LINE = re.compile(r"\berror\b\s*:|CMake Error|\[ERROR\]", re.IGNORECASE)
CMAKE_ERROR = re.compile(r"^CMake Error\b")
WHEEL_START = re.compile(r"\bbdist_wheel\b")
# what FetchContent says when a download fails
SUBBUILD_FAILED = re.compile(r"Build step for ([\w.+-]+) failed")
DOWNLOAD_FAILED = re.compile(r"error: downloading '([^']+)' failed")
DOWNLOAD_REASON = re.compile(r"(getaddrinfo\(3\) failed for \S+|Could not resolve host: \S+|"
                             r"Failed to connect to .+|HASH mismatch.*|does not exist)")
DOWNLOAD_STATUS = re.compile(r"status_string: \"((?!No error)[^\"]+)\"")   # curl's words, when nothing better


class FetchFailure:
    """A dependency configure could not get: its name, the URL and why."""

    def __init__(self, name=None, url=None, reason=None):
        self.name, self.url, self.reason = name, url, reason
        self.specific = False        # reason names the host or file, not only curl's status

    def describe(self):
        what = f"fetching {self.name}" if self.name else "a download"
        where = f": downloading {self.url} failed" if self.url else ""
        why = f" ({self.reason})" if self.reason else ""
        return f"configure failed {what}{where}{why}"


class OutputScanner:
    """Follows build.py's output line by line and keeps what the user must be told."""

    def __init__(self):
        self.done = 0
        self.total = None
        self.percent = None          # Makefile builds report only a percentage
        self.phase = "configure"
        self.configured = False      # the main build files are written: [x/N] is the compile from here
        self.fetching = None         # the dependency FetchContent is populating
        self.fetch_failure = None
        self.failed_target = None
        self.first_error = None      # the first error-looking line anywhere
        self.failure_error = None    # the first one after ninja's FAILED: (the compiler's message)
        self._cmake_error = None     # a "CMake Error at ...:" line waiting for its message line
        self.oom = False
        self.steps_seen = 0
        self.step_description = ""   # what ninja's last [x/N] line says it finished
        self.tail = deque(maxlen=20)

    def feed(self, line):
        self.tail.append(line)
        if self.phase == "configure":
            self._feed_configure(line)
        step = NINJA_STEP.match(line)
        if step:
            if self.configured and not SUBBUILD_STEP.search(line) and int(step.group(1)) > 0:
                self.done, self.total = int(step.group(1)), int(step.group(2))
                self.step_description = line[step.end():].strip()
                self.phase = "compile"
                self.steps_seen += 1
            return
        make = MAKE_STEP.match(line)
        if make and self.configured:
            self.percent = int(make.group(1))
            self.phase = "compile"
            self.steps_seen += 1
            return
        if FAILED.match(line):
            if self.failed_target is None:
                self.failed_target = line[len("FAILED: "):].strip()
            return
        if OOM_KILLED.search(line):
            self.oom = True
        if WHEEL_START.search(line) and self.phase == "compile":
            self.phase = "wheel"
            if self.total:
                self.done = self.total    # build.py builds the wheel only after the compile succeeded
            return
        self._note_error(line)

    def _feed_configure(self, line):
        populating = POPULATING.match(line) or SUBBUILD_STEP.search(line)
        if populating:
            self.fetching = populating.group(1)
        written = BUILD_FILES_WRITTEN.match(line)
        if (written and not written.group(1).rstrip("/").endswith("-subbuild")) or COMPILE_START.search(line):
            self.configured = True
            self.fetching = None
        failed = SUBBUILD_FAILED.search(line)
        download = DOWNLOAD_FAILED.search(line)
        reason = DOWNLOAD_REASON.search(line)
        status = DOWNLOAD_STATUS.search(line)
        if failed or download or ((reason or status) and self.fetching):
            failure = self.fetch_failure or FetchFailure(self.fetching)
            if failed:
                failure.name = failed.group(1)
            if download and failure.url is None:
                failure.url = download.group(1)
            if reason and not failure.specific:
                failure.reason, failure.specific = reason.group(1), True
            elif status and failure.reason is None:
                failure.reason = status.group(1)
            self.fetch_failure = failure

    def _note_error(self, line):
        stripped = line.strip()
        if self._cmake_error is not None and stripped:
            # CMake puts the message on the line after "CMake Error at file:line (message):"
            stripped, self._cmake_error = f"{self._cmake_error} {stripped}", None
            if self.first_error is None:
                self.first_error = stripped
            return
        if CMAKE_ERROR.match(stripped) and stripped.endswith(":"):
            self._cmake_error = stripped
            return
        if OOM_KILLED.search(line) or ERROR_LINE.search(line):
            if self.first_error is None:
                self.first_error = stripped
            if self.failed_target is not None and self.failure_error is None:
                self.failure_error = stripped

    @property
    def fraction(self):
        if self.total:
            return self.done / self.total
        if self.percent is not None:
            return self.percent / 100
        return None

    def position(self):
        """'412/998' (ninja) or '41%' (make) or None before compiling starts."""
        if self.total:
            return f"{self.done}/{self.total}"
        if self.percent is not None:
            return f"{self.percent}%"
        return None

    def error_summary(self):
        """The failed download, else the compiler's error for the failed step, else the first error,
        else the last line."""
        if self.fetch_failure is not None and self.phase == "configure":
            return self.fetch_failure.describe()
        if self.failure_error or self.first_error:
            return self.failure_error or self.first_error
        return next((line.strip() for line in reversed(self.tail) if line.strip()), "no output")


ETA_SOURCES = {
    "ninja-log": "ETA from the step times of an earlier build of this tree (ninja's log)",
    "step-kind": "ETA by step kind (no earlier build of this tree to time it by), so a range",
}


class BuildProgress:
    """A rich progress bar on a terminal; otherwise (CI logs, a pipe) one line per 5% and per phase.

    `build_dir`: ORT's build directory (its build.ninja and .ninja_log weigh the ETA);
    `kept_log`: the .ninja_log ortprof kept of an earlier complete build of this version.
    """

    PLAIN_EVERY = 0.05

    def __init__(self, console, title, verbose=False, build_dir=None, jobs=1, kept_log=None, clock=time.monotonic):
        self.console = console
        self.title = title
        self.verbose = verbose
        self.scanner = OutputScanner()
        self.clock = clock
        if build_dir is not None:
            # read before the build starts: the build directory's log then holds earlier runs only
            costs, built_before = earlier_build(build_dir, kept_log)
            self.eta = CompileEta(lambda: read_build_plan(build_dir), costs, built_before, jobs, clock)
        else:
            self.eta = CompileEta(jobs=jobs, clock=clock)
        self.estimate = None
        self.started = clock()
        self.interactive = console.is_terminal
        self._progress = None
        self._task = None
        self._last_plain = None
        self._phase = None
        self._shown = None            # (done, total) last shown
        self._eta_source = None

    def __enter__(self):
        if self.interactive:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn)
            # rich's own remaining time is a linear count of steps: the weighted estimate instead
            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TextColumn("elapsed"), TimeElapsedColumn(),
                                      TextColumn("ETA {task.fields[eta]}"), console=self.console,
                                      transient=False)
            self._progress.start()
            self._task = self._progress.add_task(f"{self.title}: configure", total=None, eta="unknown")
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False

    def line(self, text):
        scanner = self.scanner
        scanner.feed(text)
        if self.verbose:
            self.console.print(text, markup=False, highlight=False)
        if scanner.phase != self._phase:
            if self._phase == "compile":
                self._show_compile(final=True)      # the last step as ninja finished it
            self._phase = scanner.phase
            if self._progress is not None:
                self._progress.update(self._task, description=f"{self.title}: {scanner.phase}")
            elif not self.verbose:
                self.console.print(f"{self.title}: {scanner.phase}...", highlight=False)
        if scanner.phase == "compile":
            self._show_compile()

    def _show_compile(self, final=False):
        scanner = self.scanner
        if scanner.total:
            done, total = scanner.done, scanner.total
        elif scanner.percent is not None:
            done, total = scanner.percent, 100   # make's percentage says nothing of what the steps cost
        else:
            return
        if (done, total) == self._shown:
            return
        self._shown = (done, total)
        if scanner.total and not final:
            self.estimate = self.eta.update(done, total, scanner.step_description)
            self._say_eta_source()
        eta_text = self.eta_text() if done < total else ""
        if self._progress is not None:
            if self._progress.tasks[0].total != total:
                self._progress.reset(self._task, total=total, completed=done, eta=eta_text)
            else:
                self._progress.update(self._task, completed=done, eta=eta_text)
            return
        fraction = done / total
        if self.verbose or not (final or self._last_plain is None or fraction < self._last_plain or
                                fraction - self._last_plain >= self.PLAIN_EVERY or done == total):
            return
        self._last_plain = fraction
        self.console.print(f"{self.title}: {done}/{total} steps ({_percent(fraction)}), elapsed "
                           f"{format_duration(self.elapsed())}" + (f", ETA {eta_text}" if eta_text else ""),
                           highlight=False)

    def eta_text(self):
        """'26m32s', '17m-31m' (by step kind), or 'unknown'."""
        return self.estimate.text() if self.estimate is not None else "unknown"

    def _say_eta_source(self):
        """Once per ninja run: what the ETA rests on (a range, one number, or nothing)."""
        source = self.eta.source or self.eta.unknown_because
        if source == self._eta_source or self.verbose:
            return
        self._eta_source = source
        self.console.print(f"{self.title}: {ETA_SOURCES.get(source) or f'ETA unknown: {source}'}", highlight=False)

    def elapsed(self):
        return self.clock() - self.started


def _percent(fraction):
    """Whole percent, never '100%' before the last step (998/999 is 99%)."""
    return f"{int(fraction * 100)}%"
