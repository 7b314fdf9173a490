"""Ctrl+C and SIGTERM for commands that must stop in order (record, sweep).

Inside `stop_signals_raise_interrupted()` the first SIGINT/SIGTERM raises
Interrupted; later ones are ignored, so a second Ctrl+C cannot cut the
orderly stop (profilers, workload, manifest) short. Handlers are restored on exit.
"""
import contextlib
import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Ctrl+C or SIGTERM reached ortprof: stop in order and keep everything."""


def ignore_stop_signals():
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _raise_interrupted(signum, frame):
    ignore_stop_signals()
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_signals_raise_interrupted():
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
