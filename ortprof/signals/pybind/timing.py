"""run() spans of a Python process from uprobes on its pybind11 dispatchers (dispatch.py).

Each dispatch site gets an entry uprobe and one uprobe on each of its `ret` instructions (not
a `%return` probe: code.py says why one would abort the target when run() raises). They go in
the owner's probe group of ortprof.signals.capi.probes (`ortprof_<pid>_<start>`, removed
however the block ends, stale ones of dead owners removed first), with event names made the
same way (EVENT__PID, the owner's pid):

    GROUP:py_run__PID=0x4b90b0 sp=%sp func=+0(%di):x64 inline=+8(%di):u8 a16=+16(%di):x64 d16=+0(+16(%di)):x64
    GROUP:py_run__PID_x0=0x4b91fb sp=%sp ret=%ax

The dispatcher is `handle impl(function_call &call)`: %di is `call`, whose first field is the
function record (`func`) and whose second is the argument vector, `self` first. How that vector
is laid out is pybind11's: a std::vector<handle> in 2.x (self at +0(+8(%di))), a small vector
in 3.x (a bool "inline" at +8, then the handles inline at +16, or a std::vector at +16 when they
did not fit). `self` is the `onnxruntime.capi.onnxruntime_pybind11_state.InferenceSession`
object, id(session._sess) in the service: the session's identity while it lives.

A run is an entry and the exit at the same stack pointer on the same thread (the stack pointer
at a `ret` is the one at entry). An entry whose run raised has no exit: the next entry on that
thread at the same or a shallower stack pointer closes it as raised. An exit whose return value
is 1 (pybind11's "try the next overload") is a call whose arguments did not convert: no run.
"""
import contextlib
import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ...errors import EnvironmentProblem, InputError
from ...stopping import stop_signals_raise_interrupted
from ..capi.probes import Owner, Uprobes, event_name, remove_stale
from ..capi.spans import SCRIPT_FIELDS, ProbeEvent, parse_events
from .dispatch import DispatchSites

EVENT_PREFIX = "py_"
EXIT_TAG = "_x"
TRY_NEXT_OVERLOAD = 1
ENTRY_ARGUMENTS: Dict[str, Tuple[str, ...]] = {
    # records layout -> what the entry probe fetches to tell `self`
    "flags8": ("sp=%sp", "func=+0(%di):x64", "self=+0(+8(%di)):x64"),
    "flags9": ("sp=%sp", "func=+0(%di):x64", "inline=+8(%di):u8", "a16=+16(%di):x64", "d16=+0(+16(%di)):x64"),
}
EXIT_ARGUMENTS = ("sp=%sp", "ret=%ax")
PERF_SCRIPT_TIMEOUT = 300

RETURNED = "returned"
RAISED = "raised"            # no exit: a later entry on its thread came first
NO_MATCH = "no_match"        # the arguments did not convert: pybind11 tried the next overload, ORT did not run
RUNNING = "running"          # no exit before recording stopped
BEFORE = "before"            # an exit whose entry was before recording started


@dataclass
class RunSpan:
    method: str                  # "run"
    overload: int
    pid: Optional[int]
    tid: int
    start_ns: Optional[int]      # CLOCK_MONOTONIC (perf record -k mono)
    end_ns: Optional[int]
    outcome: str
    session: Optional[int] = None    # id() of the pybind InferenceSession object (`self`)
    record: Optional[int] = None     # the function record the call went through

    @property
    def duration_ns(self) -> Optional[int]:
        if self.start_ns is None or self.end_ns is None:
            return None
        return self.end_ns - self.start_ns


def entry_arguments(layout: str) -> Tuple[str, ...]:
    if layout not in ENTRY_ARGUMENTS:
        raise InputError(f"no probe arguments for pybind11 record layout {layout!r}")
    return ENTRY_ARGUMENTS[layout]


def probe_definitions(group: str, tag: str, sites: DispatchSites,
                      methods: Optional[Sequence[str]] = None) -> List[str]:
    """perf probe -a definitions: an entry and its exits for each site (of `methods`, default all)."""
    chosen = [site for site in sites.sites if methods is None or site.method in methods]
    if not chosen:
        raise InputError(f"none of {', '.join(methods or [])} is among the dispatch sites "
                         f"({', '.join(sites.methods)})")
    definitions = []
    for site in chosen:
        definitions.append(" ".join((f"{group}:{event_name(site.probe_name, tag)}=0x{site.entry:x}",
                                     *entry_arguments(sites.layout))))
        for index, offset in enumerate(site.exits):
            definitions.append(" ".join((f"{group}:{event_name(site.probe_name, f'{tag}{EXIT_TAG}{index}')}"
                                         f"=0x{offset:x}", *EXIT_ARGUMENTS)))
    return definitions


class DispatchProbes(Uprobes):
    """The probes on dispatch sites, in the owner's group (Uprobes: naming, removal)."""

    def add_sites(self, sites: DispatchSites, methods: Optional[Sequence[str]] = None) -> List[str]:
        return self._add(sites.module, probe_definitions(self.group, str(self.owner.pid), sites, methods))


@contextlib.contextmanager
def installed_dispatch_probes(perf: str, sites: DispatchSites, methods: Optional[Sequence[str]] = None,
                              owner: Optional[Owner] = None) -> Iterator[DispatchProbes]:
    """Probes on the dispatch sites while the block runs, removed when it ends (an exception,
    Ctrl+C and SIGTERM too). Stale groups of dead ortprof processes are removed first."""
    remove_stale(perf)
    probes = DispatchProbes(perf, owner)
    terminate_raises = threading.current_thread() is threading.main_thread() \
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with (stop_signals_raise_interrupted() if terminate_raises else contextlib.nullcontext()):
        try:
            probes.add_sites(sites, methods)
            yield probes
        finally:
            probes.remove()


def record_events(perf: str, probes: Uprobes, pid: int, seconds: float, output: str) -> List[str]:
    """`perf record -k mono` of the probes' events in process `pid` for `seconds`; the lines of
    `perf script` (SCRIPT_FIELDS)."""
    command = [perf, "record", "-q", "-k", "mono", *probes.record_arguments(), "-p", str(pid), "-o", output,
               "--", "sleep", f"{seconds:g}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0 or not os.path.exists(output):
        raise EnvironmentProblem(f"perf record of the dispatcher probes failed: "
                                 f"{(done.stderr or '').strip().splitlines()[-1:] or done.returncode}")
    script = subprocess.run([perf, "script", "-i", output, "-F", SCRIPT_FIELDS, "--ns"], capture_output=True,
                            text=True, timeout=PERF_SCRIPT_TIMEOUT)
    if script.returncode != 0:
        raise EnvironmentProblem(f"perf script failed: {(script.stderr or '').strip()[:200]}")
    return script.stdout.splitlines()


def _site_of(function: str) -> Tuple[str, int]:
    """(method, overload) of an event's function part: py_run -> (run, 0), py_run_o1 -> (run, 1)."""
    name = function[len(EVENT_PREFIX):]
    head, _, overload = name.rpartition("_o")
    if head and overload.isdigit():
        return head, int(overload)
    return name, 0


def _number(arguments: Dict[str, str], name: str) -> Optional[int]:
    value = arguments.get(name)
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        return None


def session_of(arguments: Dict[str, str], layout: str) -> Optional[int]:
    """`self` of a call, from what the entry probe fetched (ENTRY_ARGUMENTS of `layout`)."""
    if layout == "flags9":
        inline = _number(arguments, "inline")
        value = _number(arguments, "a16" if inline == 1 else "d16")
    else:
        value = _number(arguments, "self")
    return value or None


def dispatch_events(lines: Iterable[str], tag: Optional[str] = None) -> List[ProbeEvent]:
    """The dispatcher probes' events among `perf script` lines (of one owner's `tag`, its pid, if given)."""
    events = []
    for event in parse_events(lines):
        if not event.function.startswith(EVENT_PREFIX):
            continue
        owner_tag = event.tag.split(EXIT_TAG, 1)[0]
        if tag is not None and owner_tag != tag:
            continue
        events.append(event)
    return events


def pair_runs(events: Iterable[ProbeEvent], layout: str) -> List[RunSpan]:
    """Run spans from entry and exit events (see the module's docstring), in the order they began."""
    spans: List[RunSpan] = []
    open_by_thread: Dict[int, Dict[int, RunSpan]] = {}
    for event in sorted(events, key=lambda e: e.time_ns):
        method, overload = _site_of(event.function)
        sp = _number(event.arguments, "sp")
        if sp is None:
            continue
        opened = open_by_thread.setdefault(event.tid, {})
        is_exit = EXIT_TAG in event.tag
        # frames at or below this stack pointer are gone: their runs raised
        for stale in [s for s in opened if s < sp or (not is_exit and s == sp)]:
            gone = opened.pop(stale)
            gone.outcome = RAISED
            spans.append(gone)
        if not is_exit:
            opened[sp] = RunSpan(method, overload, event.pid, event.tid, event.time_ns, None, RUNNING,
                                 session_of(event.arguments, layout), _number(event.arguments, "func"))
            continue
        span = opened.get(sp)
        if span is not None and (span.method, span.overload) == (method, overload):
            del opened[sp]
        else:                           # no entry (or another method's, kept open): began before
            span = RunSpan(method, overload, event.pid, event.tid, None, None, BEFORE)
        span.end_ns = event.time_ns
        if span.start_ns is not None:
            span.outcome = NO_MATCH if _number(event.arguments, "ret") == TRY_NEXT_OVERLOAD else RETURNED
        spans.append(span)
    for opened in open_by_thread.values():
        spans.extend(opened.values())
    return sorted(spans, key=lambda s: -1 if s.start_ns is None else s.start_ns)


def time_runs(perf: str, sites: DispatchSites, seconds: float, output: str,
              methods: Optional[Sequence[str]] = None) -> List[RunSpan]:
    """Probe the dispatch sites of `sites.pid`, record `seconds`, remove the probes; the spans."""
    with installed_dispatch_probes(perf, sites, methods) as probes:
        lines = record_events(perf, probes, sites.pid, seconds, output)
        tag = str(probes.owner.pid)
    return pair_runs(dispatch_events(lines, tag), sites.layout)

