"""C API calls from the probes' events: `perf script` lines, entry and return paired per thread.

`perf script -F trace:pid,tid,time,event,trace --ns` prints one line per event:

    18030/18030 2438.017537482: ortprof_18000_2101:CreateSession__18000: (7f83da5e0540) model="/m.onnx" options=0x55b2
    18030/18030 2438.030945919: ortprof_18000_2101:CreateSession__18000__return: (7f83da5e0540 <- 55b242857239) status=0x0

A call is an entry and the next return of the same function in the same thread
(C API functions do not nest into themselves). An entry without a return is a call
still running when recording stopped; a return without an entry began before it started.
RunAsync's span is the submission only: its work completes on ORT's threads later.
"""
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from .probes import event_function

SCRIPT_FIELDS = "trace:pid,tid,time,event,trace"

_EVENT = re.compile(r"\s*(?:(\d+)/)?(\d+)\s+(\d+)\.(\d+):\s+([\w.]+):(\w+):\s+\(([0-9a-f]+)(?: <- ([0-9a-f]+))?\)\s*(.*)$")
_ARGUMENT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@dataclass(frozen=True)
class ProbeEvent:
    pid: Optional[int]
    tid: int
    time_ns: int
    group: str
    function: str               # the C API function ("Run")
    tag: str                    # the rest of the event's name: the owner's pid (and library tag)
    returning: bool
    arguments: Dict[str, str]   # strings unquoted; numbers as perf prints them ("0x55b2", "1")


@dataclass
class CapiCall:
    function: str
    tag: str                    # tells apart the libraries one owner probes
    pid: Optional[int]
    tid: int
    start_ns: Optional[int]     # None: it began before recording started
    end_ns: Optional[int]       # None: still running when recording stopped
    arguments: Dict[str, str] = field(default_factory=dict)
    returned: Dict[str, str] = field(default_factory=dict)   # "status": "0x0" on success

    @property
    def duration_ns(self) -> Optional[int]:
        if self.start_ns is None or self.end_ns is None:
            return None
        return self.end_ns - self.start_ns

    @property
    def failed(self) -> bool:
        status = self.returned.get("status")
        return status is not None and int(status, 0) != 0


def _value(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


def parse_event(line: str) -> Optional[ProbeEvent]:
    """The probe event on one `perf script` line; None for any other line."""
    match = _EVENT.match(line)
    if match is None:
        return None
    pid, tid, seconds, fraction, group, event, _, _, rest = match.groups()
    function, tag, returning = event_function(event)
    time_ns = int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9])
    arguments = {name: _value(value) for name, value in _ARGUMENT.findall(rest)}
    return ProbeEvent(int(pid) if pid else None, int(tid), time_ns, group, function, tag, returning, arguments)


def parse_events(lines: Iterable[str]) -> Iterator[ProbeEvent]:
    for line in lines:
        event = parse_event(line)
        if event is not None:
            yield event


def script_lines(perf: str, data_files: Iterable[str], scratch: str, timeout: float = 300,
                 with_samples: bool = False) -> List[str]:
    """`perf script` lines (SCRIPT_FIELDS) of the probe events recorded in `data_files`. perf
    script resolves no symbol here (an empty --symfs in `scratch`, no kallsyms) and, for files
    that also hold cpu-clock samples (`with_samples`: the agent's), skips them (`-F sw:`; perf
    refuses that option for a file without software events): ~0.01 s for a window instead of
    ~0.4 s. Raises OSError or subprocess.TimeoutExpired when perf cannot be run."""
    import os
    import subprocess
    import tempfile
    lines: List[str] = []
    with tempfile.TemporaryDirectory(dir=scratch) as symfs:
        for data in data_files:
            if not os.path.exists(data) or os.path.getsize(data) == 0:
                continue
            skip_samples = ["-F", "sw:"] if with_samples else []
            done = subprocess.run([perf, "script", "-i", str(data), "-F", SCRIPT_FIELDS, *skip_samples, "--ns",
                                   "--symfs", symfs, "--kallsyms", os.devnull],
                                  capture_output=True, text=True, errors="replace", timeout=timeout,
                                  stdin=subprocess.DEVNULL)
            lines += done.stdout.splitlines()
    return lines


def read_calls(perf: str, data_files: Iterable[str], scratch: str, pid: Optional[int] = None,
               timeout: float = 300, with_samples: bool = False) -> List[CapiCall]:
    """The C API calls recorded in `data_files` (of process `pid` only, when given); script_lines
    says how they are read."""
    lines = script_lines(perf, data_files, scratch, timeout, with_samples)
    return [call for call in pair_calls(parse_events(lines)) if pid is None or call.pid in (None, pid)]


def pair_calls(events: Iterable[ProbeEvent]) -> List[CapiCall]:
    """Calls in the order they began (those that began before recording first)."""
    open_calls: Dict[Tuple[int, str, str], CapiCall] = {}
    calls: List[CapiCall] = []
    for event in sorted(events, key=lambda e: e.time_ns):
        key = (event.tid, event.function, event.tag)
        if not event.returning:
            unfinished = open_calls.pop(key, None)
            if unfinished is not None:      # a lost return (perf's buffer overflowed): keep it open-ended
                calls.append(unfinished)
            open_calls[key] = CapiCall(event.function, event.tag, event.pid, event.tid, event.time_ns, None,
                                       dict(event.arguments))
            continue
        call = open_calls.pop(key, None)
        if call is None:
            call = CapiCall(event.function, event.tag, event.pid, event.tid, None, None)
        call.end_ns = event.time_ns
        call.returned = dict(event.arguments)
        calls.append(call)
    calls.extend(open_calls.values())
    return sorted(calls, key=lambda c: -1 if c.start_ns is None else c.start_ns)
