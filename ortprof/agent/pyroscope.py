"""Pushes to Grafana Pyroscope's ingest API through a bounded on-disk spool.

The request is the one Pyroscope's own clients send:

    POST <url>/ingest?name=<app>{k=v,...}&from=<unix s>&until=<unix s>&format=pprof
                      &sampleRate=<Hz>&spyName=ortprof
    Content-Type: multipart/form-data; the gzipped profile.proto in the form field "profile"
    (filename profile.pprof); optional Authorization: Basic ..., X-Scope-OrgID: <tenant>

Every profile is first written to the spool directory (one file per profile,
named by a sequence number); a background thread sends the oldest first and
deletes it once Pyroscope answered 2xx. While the server is down or answers
5xx/429 it retries with exponential backoff, keeping the order; past the spool's
bound the oldest profiles are dropped. Nothing here ever waits in the window loop.
"""
import base64
import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from .. import __version__

SPY_NAME = "ortprof"
SUFFIX = ".push"
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
TIMEOUT = 10.0
# 4xx answers that retrying the same request can cure; any other 4xx rejects the profile.
RETRY_4XX = {401, 403, 404, 408, 425, 429}
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.:/-]+")


def check_url(url):
    """Why `url` cannot be Pyroscope's base URL, or None."""
    try:
        parsed = urllib.parse.urlsplit(url)
        parsed.port   # raises ValueError for a bad port
    except ValueError as error:
        return f"not a URL ({error})"
    if parsed.scheme not in ("http", "https"):
        return f"the scheme must be http or https, not {parsed.scheme or 'none'!r}"
    if not parsed.hostname:
        return "no host in the URL"
    return None


def app_name(service, labels):
    """Pyroscope's `name`: service{k=v,...}; values limited to characters its parser keeps."""
    clean = {key: _LABEL_VALUE.sub("_", str(value)) for key, value in labels.items() if value not in (None, "")}
    inner = ",".join(f"{key}={value}" for key, value in sorted(clean.items()))
    return f"{_LABEL_VALUE.sub('_', service) or 'unknown'}{{{inner}}}"


def multipart(field, filename, data):
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return f"multipart/form-data; boundary={boundary}", head + data + f"\r\n--{boundary}--\r\n".encode()


class Spool:
    """Profiles waiting to be sent, oldest first, at most `max_bytes` on disk."""

    def __init__(self, directory, max_bytes, log=None, on_drop=None):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.max_bytes = max_bytes
        self.log, self.on_drop = log, on_drop
        self.lock = threading.Lock()
        items = self.items()
        self.next_seq = int(items[-1][: -len(SUFFIX)]) + 1 if items else 1

    def items(self):
        return sorted(name for name in os.listdir(self.directory) if name.endswith(SUFFIX))

    def size(self):
        total = 0
        for name in self.items():
            try:
                total += os.path.getsize(os.path.join(self.directory, name))
            except OSError:
                pass
        return total

    def put(self, header, data):
        with self.lock:
            name = f"{self.next_seq:016d}{SUFFIX}"
            self.next_seq += 1
            tmp = os.path.join(self.directory, name + ".tmp")
            with open(tmp, "wb") as stream:
                stream.write(json.dumps(header).encode() + b"\n" + data)
            os.replace(tmp, os.path.join(self.directory, name))
            self._enforce_bound()
        return name

    def _enforce_bound(self):
        items = self.items()
        sizes = {name: os.path.getsize(os.path.join(self.directory, name)) for name in items}
        total = sum(sizes.values())
        while total > self.max_bytes and len(items) > 1:
            oldest = items.pop(0)
            total -= sizes[oldest]
            self.remove(oldest)
            if self.log:
                self.log.warning("spool-dropped", profile=oldest, reason=f"spool over {self.max_bytes} bytes: "
                                 "oldest profile dropped")
            if self.on_drop:
                self.on_drop()

    def oldest(self):
        with self.lock:
            items = self.items()
            if not items:
                return None
            try:
                with open(os.path.join(self.directory, items[0]), "rb") as stream:
                    raw = stream.read()
            except OSError:
                return None
        head, _, data = raw.partition(b"\n")
        try:
            return items[0], json.loads(head), data
        except ValueError:
            self.remove(items[0])   # a torn file from a crash: skip it
            return self.oldest()

    def remove(self, name):
        try:
            os.unlink(os.path.join(self.directory, name))
        except OSError:
            pass


class Pusher:
    """Sends spooled profiles in order from a background thread."""

    def __init__(self, url, spool, log, user=None, password=None, tenant=None, metrics=None):
        self.url = url.rstrip("/") + "/ingest"
        self.spool, self.log, self.metrics = spool, log, metrics
        self.headers = {"User-Agent": f"ortprof-agent/{__version__}"}
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        if tenant:
            self.headers["X-Scope-OrgID"] = tenant
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.idle = threading.Event()
        self.failing = None          # the reason of the current run of failures, logged once
        self.thread = threading.Thread(target=self._run, name="ortprof-push", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def push(self, service, labels, start_unix, end_unix, sample_rate, data):
        header = {"name": app_name(service, labels), "from": int(start_unix), "until": int(max(end_unix, start_unix + 1)),
                  "format": "pprof", "sampleRate": int(sample_rate), "spyName": SPY_NAME}
        self.idle.clear()
        name = self.spool.put(header, data)
        self.wake.set()
        return name

    def send(self, header, data):
        """(outcome, detail): outcome "sent", "retry" or "rejected"."""
        content_type, body = multipart("profile", "profile.pprof", data)
        query = urllib.parse.urlencode(header)
        request = urllib.request.Request(f"{self.url}?{query}", data=body, method="POST",
                                         headers=dict(self.headers, **{"Content-Type": content_type}))
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                response.read()
            return "sent", response.status
        except urllib.error.HTTPError as error:
            text = error.read(300).decode(errors="replace").strip()
            detail = f"HTTP {error.code} {error.reason}" + (f": {text}" if text else "")
            if error.code >= 500 or error.code in RETRY_4XX:
                return "retry", detail
            return "rejected", detail
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            return "retry", f"cannot reach {self.url}: {reason}"

    def _run(self):
        backoff = BACKOFF_FIRST
        while not self.stopping.is_set():
            item = self.spool.oldest()
            if item is None:
                self.idle.set()
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            name, header, data = item
            outcome, detail = self.send(header, data)
            if self.metrics:
                self.metrics.pushed(outcome)
            if outcome == "retry":
                if self.failing != detail:
                    self.failing = detail
                    self.log.error("push-failed", reason=detail, spooled=len(self.spool.items()),
                                   retry="with backoff; profiles stay in the spool")
                self.stopping.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self.spool.remove(name)
            backoff = BACKOFF_FIRST
            if outcome == "rejected":
                self.log.error("push-rejected", profile=name, name=header.get("name"), reason=detail)
            elif self.failing is not None:
                self.failing = None
                self.log.info("push-resumed", profile=name, spooled=len(self.spool.items()))

    def drain(self, timeout):
        """Wait up to `timeout` s for the spool to empty (shutdown, --once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.spool.items() and self.thread.is_alive():
            self.wake.set()
            time.sleep(0.05)
        return not self.spool.items()

    def stop(self):
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=TIMEOUT + 1)
