"""Reading ORT's build output: ninja's [x/N] progress, the first error, an OOM-killed compiler."""
import re
import time
from collections import deque

NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]\s")
MAKE_STEP = re.compile(r"^\[\s*(\d+)%\]\s")            # when CMake generated Makefiles instead
FAILED = re.compile(r"^FAILED: ")
# gcc/clang when the kernel's OOM killer took the compiler (or the linker)
OOM_KILLED = re.compile(r"Killed signal terminated program|internal compiler error: Killed|"
                        r"terminated with signal 9|fatal error: Killed")
ERROR_LINE = re.compile(r"\berror\b\s*:|CMake Error|\[ERROR\]", re.IGNORECASE)
WHEEL_START = re.compile(r"\bbdist_wheel\b")


class OutputScanner:
    """Follows build.py's output line by line and keeps what the user must be told."""

    def __init__(self):
        self.done = 0
        self.total = None
        self.percent = None          # Makefile builds report only a percentage
        self.phase = "configure"
        self.failed_target = None
        self.first_error = None      # the first error-looking line anywhere
        self.failure_error = None    # the first one after ninja's FAILED: (the compiler's message)
        self.oom = False
        self.steps_seen = 0
        self.tail = deque(maxlen=20)

    def feed(self, line):
        self.tail.append(line)
        step = NINJA_STEP.match(line)
        if step:
            self.done, self.total = int(step.group(1)), int(step.group(2))
            self.phase = "compile"
            self.steps_seen += 1
            return
        make = MAKE_STEP.match(line)
        if make:
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
        if WHEEL_START.search(line) and self.phase != "wheel":
            self.phase = "wheel"
            return
        if OOM_KILLED.search(line) or ERROR_LINE.search(line):
            if self.first_error is None:
                self.first_error = line.strip()
            if self.failed_target is not None and self.failure_error is None:
                self.failure_error = line.strip()

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
        """The compiler's error for the failed step, else the first error, else the last line."""
        if self.failure_error or self.first_error:
            return self.failure_error or self.first_error
        return next((line.strip() for line in reversed(self.tail) if line.strip()), "no output")


def format_duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class EtaClock:
    """ETA from the steps done since this ninja run started.

    Restarts when the total changes (ninja re-ran CMake and now counts the real
    build) or the count goes back, so neither that nor a resumed build skews it.
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.start = None
        self.start_done = 0
        self.total = None

    def update(self, done, total):
        now = self.clock()
        if self.start is None or done < self.start_done or total != self.total:
            self.start, self.start_done, self.total = now, done, total
            return None
        progressed = done - self.start_done
        if progressed <= 0:
            return None
        return (now - self.start) / progressed * (total - done)


class BuildProgress:
    """A rich progress bar on a terminal; one line per 10% otherwise (CI logs)."""

    PLAIN_EVERY = 0.10

    def __init__(self, console, title, verbose=False):
        self.console = console
        self.title = title
        self.verbose = verbose
        self.scanner = OutputScanner()
        self.eta = EtaClock()
        self.started = time.monotonic()
        self.interactive = console.is_terminal
        self._progress = None
        self._task = None
        self._last_plain = -1.0
        self._phase = None

    def __enter__(self):
        if self.interactive:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TextColumn("elapsed"), TimeElapsedColumn(),
                                      TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
                                      transient=False)
            self._progress.start()
            self._task = self._progress.add_task(f"{self.title}: configure", total=None)
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
            self._phase = scanner.phase
            if self._progress is not None:
                self._progress.update(self._task, description=f"{self.title}: {scanner.phase}")
            elif not self.verbose:
                self.console.print(f"{self.title}: {scanner.phase}...", highlight=False)
        if scanner.phase != "compile":
            return
        if scanner.total:
            done, total = scanner.done, scanner.total
        else:
            done, total = scanner.percent, 100
        eta = self.eta.update(done, total)
        if self._progress is not None:
            if self._progress.tasks[0].total != total:
                self._progress.reset(self._task, total=total, completed=done)   # fresh rate for the ETA
            else:
                self._progress.update(self._task, completed=done)
        elif not self.verbose and scanner.fraction is not None and \
                (scanner.fraction - self._last_plain >= self.PLAIN_EVERY or done == total):
            self._last_plain = scanner.fraction
            eta_text = f", ETA {format_duration(eta)}" if eta is not None else ""
            self.console.print(f"{self.title}: {scanner.position()} steps ({scanner.fraction:.0%}), elapsed "
                               f"{format_duration(self.elapsed())}{eta_text}", highlight=False)

    def elapsed(self):
        return time.monotonic() - self.started
