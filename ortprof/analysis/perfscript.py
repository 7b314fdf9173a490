"""Streaming `perf script` decoding: one Sample at a time, never the whole file.

ortprof asks perf for explicit fields (so the text is stable across perf
versions) and `--no-inline` (resolving inlined frames through a Debug build's
debug info takes perf minutes). The parser also reads perf's default output
(as in shared fixtures): header lines with or without `[cpu]`, with or
without a period, frames on tab-indented lines, events without call chains
printing their ip on the header line.
"""
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Literal, NamedTuple, Optional, Union

from ..errors import EnvironmentProblem, InputError

SCRIPT_FIELDS = "comm,pid,tid,time,period,event,ip,sym,symoff,dso,trace"

_HEADER = re.compile(
    r"^\s*(?P<comm>.*?)\s+(?:(?P<pid>\d+)/)?(?P<tid>\d+)(?:\s+\[(?P<cpu>\d+)\])?\s+"
    r"(?P<time>\d+\.\d+):\s+(?:(?P<period>\d+)\s+)?(?P<event>\S+?):(?:\s|$)(?P<rest>.*)$")
# "  10e5222 [unknown] (/path/lib.so)"  or  "  101829 syscall+0x19 (/usr/lib/libc.so.6)"
# The DSO is the last parenthesized group: C++ symbol names contain parentheses.
_FRAME = re.compile(r"^\s*(?P<addr>[0-9a-f]+)\s+(?P<sym>.*)\s+\((?P<dso>[^()]*)\)\s*$")
_UNWIND_END = 0xFFFFFFFFFFFFFFFF   # perf's "[unknown]" marker where unwinding stopped
_SYMOFF = re.compile(r"^(?P<name>.*)\+0x(?P<off>[0-9a-f]+)$")


class Frame(NamedTuple):
    """A NamedTuple: hashing and comparing happen in C, millions of times per report."""
    addr: int               # DSO-relative address as perf prints it
    symbol: Optional[str]   # None where perf has no name ([unknown])
    offset: int
    dso: str


@dataclass
class Sample:
    comm: str
    pid: Optional[int]
    tid: int
    time: float
    period: int
    event: str
    trace: str
    frames: tuple       # leaf first

    @property
    def is_cpu(self):
        return self.event in ("cpu-clock", "task-clock", "cycles", "cpu-cycles") or self.event.startswith("cpu")

    @property
    def is_futex_enter(self):
        return self.event.endswith("sys_enter_futex")

    @property
    def is_futex_exit(self):
        return self.event.endswith("sys_exit_futex")


def parse_frame(line) -> Optional[Frame]:
    match = _FRAME.match(line)
    if not match:
        return None
    symbol = match["sym"]
    offset = 0
    if symbol == "[unknown]":
        symbol = None
    else:
        off = _SYMOFF.match(symbol)
        if off:
            symbol, offset = off["name"], int(off["off"], 16)
    return Frame(int(match["addr"], 16), symbol, offset, match["dso"])


def _header_frame(rest):
    """An event without a call chain prints 'trace...  ip sym+off (dso)' on its header line."""
    match = re.search(r"\s([0-9a-f]{4,})\s+(\S.*\(\S*\))\s*$", rest)
    if not match:
        return rest, ()
    frame = parse_frame(match.group(1) + " " + match.group(2))
    return rest[:match.start()].strip(), (frame,) if frame else ()


FRAME_CACHE_LIMIT = 1_000_000   # distinct frame lines kept parsed; bounds memory


def parse_samples(lines):
    """Yield Samples from perf script text lines (an iterable: a file or a pipe).

    Frame lines repeat (the same call paths are sampled again and again), so each
    distinct line is parsed once: the hot loop is a dict lookup per frame."""
    header = None
    frames: List[Frame] = []
    parsed: Dict[str, Optional[Frame]] = {}   # frame line -> its Frame (None: not a frame)
    for line in lines:
        if line.startswith("\t") or (header is not None and line.startswith(" ") and _FRAME.match(line)
                                     and not _HEADER.match(line)):
            if header is not None:
                frame: Union[Frame, None, Literal[False]] = parsed.get(line, False)   # False: not parsed yet
                if frame is False:
                    if len(parsed) >= FRAME_CACHE_LIMIT:
                        parsed.clear()
                    frame = parsed[line] = parse_frame(line)
                if frame is not None and frame.addr != _UNWIND_END:
                    frames.append(frame)
            continue
        if not line.strip():
            if header is not None:
                yield _sample(header, frames)
                header, frames = None, []
            continue
        match = _HEADER.match(line.rstrip("\n"))
        if match is None:
            continue  # a stray line (perf warnings): skip
        if header is not None:
            yield _sample(header, frames)
        header, frames = match, []
    if header is not None:
        yield _sample(header, frames)


def _sample(match, frames):
    rest = match["rest"]
    if not frames:
        rest, frames = _header_frame(rest)
    return Sample(comm=match["comm"].strip(), pid=int(match["pid"]) if match["pid"] else None,
                  tid=int(match["tid"]), time=float(match["time"]),
                  period=int(match["period"]) if match["period"] else 1,
                  event=match["event"].split("/", 1)[0],  # "cpu-clock/freq=199/" -> "cpu-clock"
                  trace=rest.strip(), frames=tuple(frames))


def perf_script_command(perf, data_path, symfs=None):
    argv = [perf, "script", "-i", str(data_path), "-F", SCRIPT_FIELDS, "--no-inline",
            "--show-lost-events"]
    if symfs:
        argv += ["--symfs", symfs]
    return argv


class PerfScriptStream:
    """Context manager running `perf script` and yielding Samples as they are decoded."""

    def __init__(self, data_path, perf=None):
        if not os.path.exists(data_path):
            raise InputError(f"{data_path}: no such file")
        if os.path.getsize(data_path) == 0:
            raise InputError(f"{data_path}: empty perf data (the recording was cut short)")
        self.perf = perf or shutil.which("perf")
        if self.perf is None:
            raise EnvironmentProblem("perf is not installed; `apt-get install linux-perf` to decode perf.data")
        self.data_path = data_path
        self.process: Optional["subprocess.Popen[str]"] = None
        self.stderr = ""
        self.returncode = None

    def __enter__(self):
        self.process = subprocess.Popen(
            perf_script_command(self.perf, self.data_path), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1 << 20)
        return parse_samples(self.process.stdout)

    def __exit__(self, exc_type, exc, tb):
        process = self.process
        # __enter__ started it, with both pipes
        assert process is not None and process.stdout is not None and process.stderr is not None
        if process.poll() is None and exc_type is not None:
            process.kill()
        process.stdout.close()
        self.stderr = process.stderr.read()
        process.stderr.close()
        self.returncode = process.wait()
        return False

    def warnings(self):
        return [line.strip() for line in (self.stderr or "").splitlines() if line.strip()]
