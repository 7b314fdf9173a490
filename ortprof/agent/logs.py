"""Structured log lines on stderr: one event per line, JSON or logfmt, for journald and
container log collectors."""
import json
import sys
import threading
import time

FORMATS = ("json", "logfmt")


def _logfmt_value(value):
    text = "" if value is None else str(value)
    if text == "" or any(c in text for c in ' ="\\') or any(ord(c) < 32 for c in text):
        return json.dumps(text)
    return text


class StructuredLog:
    def __init__(self, stream=None, fmt="json"):
        if fmt not in FORMATS:
            raise ValueError(f"unknown log format {fmt!r}")
        self.stream = stream or sys.stderr
        self.fmt = fmt
        self._lock = threading.Lock()   # the push thread logs too

    def __call__(self, level, event, **fields):
        fields = {key: value for key, value in fields.items() if value is not None}
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
                  "level": level, "event": event, **fields}
        if self.fmt == "json":
            line = json.dumps(record, default=str, separators=(",", ":"))
        else:
            line = " ".join(f"{key}={_logfmt_value(value)}" for key, value in record.items())
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass   # stderr closed: the agent keeps working

    def info(self, event, **fields):
        self("info", event, **fields)

    def warning(self, event, **fields):
        self("warning", event, **fields)

    def error(self, event, **fields):
        self("error", event, **fields)
