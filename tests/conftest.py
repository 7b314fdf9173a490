import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# Started in the background by a non-interactive shell (`cmd &`, nohup), the suite
# inherits SIGINT ignored, and so would every workload it starts: Python then never
# raises KeyboardInterrupt, and the Ctrl+C tests would test nothing. A handler here
# is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
OLD_ORT_PYTHON = ROOT / ".venv" / "ort-1.15.1" / "bin" / "python"


@pytest.fixture(scope="session")
def ortprof_bin():
    return str(VENV_BIN / "ortprof")


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    path = tmp_path / "runs"
    monkeypatch.setenv("ORTPROF_RUNS_DIR", str(path))
    return path



@pytest.fixture(autouse=True)
def reports_match_the_schema(monkeypatch):
    """Every report made in-process is checked against the shipped JSON Schema
    (reports made by the CLI are checked in live.report_json)."""
    from ortprof.model.report import Report
    from schema_check import assert_valid_report
    to_json = Report.to_json
    monkeypatch.setattr(Report, "to_json", lambda self: assert_valid_report(to_json(self)))


# -- two layers: fast (unit and golden tests) and live ---------------------------------------
# A test that starts a subprocess (perf, py-spy, bpftrace, go, node, chromium, a venv, the
# ortprof CLI as a process...) or an onnxruntime InferenceSession is marked `live`; `slow`
# (real workloads under perf, seconds each) implies `live`. `make test-fast` runs
# `-m "not live"`, `make test` runs everything. The partition is enforced: while a test that
# is not live is set up, runs and is torn down, starting a process or an ORT session raises
# StartsAProcess, in `make test` too, so a mis-marked test fails everywhere. The attempt is
# also recorded, and fails the test even if the code under test caught the exception.
class StartsAProcess(RuntimeError):
    """A test not marked live started a process or an ORT session."""


LIVE_HINT = "mark it live (pytest.mark.live; docs/testing.md)"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("live"):
            item.add_marker(pytest.mark.live)


try:
    from onnxruntime import InferenceSession as _OrtSession
except ImportError:   # pragma: no cover - onnxruntime is a dependency of ortprof
    _OrtSession = None
try:
    # refused before playwright starts its node driver from a greenlet, where the refusal's
    # traceback cannot be shown (and would leave playwright's event loop behind)
    from playwright.sync_api._context_manager import PlaywrightContextManager as _Playwright
except ImportError:   # pragma: no cover - playwright is a test dependency
    _Playwright = None


class NoProcesses:
    """Replaces every way to start a process, and ORT's InferenceSession, while active."""

    OS_FUNCTIONS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system")

    def __init__(self):
        self.attempts = []
        self._saved = []

    def _refuse(self, what, args):
        if what == "onnxruntime.InferenceSession":
            message = f"this test starts an onnxruntime InferenceSession: {LIVE_HINT}"
        elif what == "playwright":
            message = f"this test starts a subprocess: {LIVE_HINT} (playwright: its driver and a browser)"
        else:
            argv = args[0] if what in ("subprocess", "fork_exec") and args else args
            if isinstance(argv, (list, tuple)):
                argv = " ".join(os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in argv)
            message = f"this test starts a subprocess: {LIVE_HINT} ({what}{': ' if argv else ''}{str(argv)[:300]})"
        self.attempts.append(message)
        raise StartsAProcess(message)

    def _replace(self, owner, name, what, method=False):
        original = getattr(owner, name, None)
        if original is None:
            return
        self._saved.append((owner, name, original))
        refuse = self._refuse
        if method:
            setattr(owner, name, lambda self, *args, **kwargs: refuse(what, args))
        else:
            setattr(owner, name, lambda *args, **kwargs: refuse(what, args))

    def __enter__(self):
        import _posixsubprocess
        # every subprocess.* call, os.popen and asyncio's subprocesses go through Popen._execute_child
        self._replace(subprocess.Popen, "_execute_child", "subprocess", method=True)
        for name in self.OS_FUNCTIONS:
            self._replace(os, name, f"os.{name}")
        self._replace(_posixsubprocess, "fork_exec", "fork_exec")    # multiprocessing's spawn and forkserver
        if _OrtSession is not None:
            self._replace(_OrtSession, "__init__", "onnxruntime.InferenceSession", method=True)
        if _Playwright is not None:
            self._replace(_Playwright, "__enter__", "playwright", method=True)
        return self

    def __exit__(self, *exc_info):
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


_ATTEMPTS = pytest.StashKey[list]()


def _guarded_phase(item):
    if item.get_closest_marker("live"):
        return (yield)
    guard = NoProcesses()
    try:
        with guard:
            return (yield)
    finally:
        item.stash[_ATTEMPTS] = guard.attempts


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _guarded_phase(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _guarded_phase(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item):
    return (yield from _guarded_phase(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    attempts = item.stash.get(_ATTEMPTS, [])
    item.stash[_ATTEMPTS] = []
    if attempts and report.outcome != "failed":
        # the code under test caught StartsAProcess (or a thread died of it): fail all the same
        report.outcome = "failed"
        report.longrepr = "\n".join(dict.fromkeys(attempts))
    return report
