"""Uprobes on ORT's C API functions: added with `perf probe`, recorded with `perf record -e`, removed.

Each function gets an entry probe and a return probe at its place in the library
file (ortprof.symbols.ortapi reads it from the OrtApi table; the library is
stripped, so perf is given an address, not a name). The forms perf 6.1 accepts
for a stripped library, and what it makes of them:

    perf probe -x LIB -a 'GROUP:Run__PID=0x3e8d80 session=%di'
        -> p:GROUP/Run__PID LIB:0x00000000003e8d80 session=%di
    perf probe -x LIB -a 'GROUP:Run__PID=0x3e8d80%return status=%ax'
        -> r:GROUP/Run__PID__return LIB:0x00000000003e8d80 status=%ax
    perf probe -x LIB -a 'GROUP:CreateSession__PID=0x3e0540 model=+0(%si):string options=%dx'
    perf probe -x LIB -a 'GROUP:SetIntraOpNumThreads__PID=0x4578e0 options=%di threads=%si:s32'
    perf probe -x LIB -a 'GROUP:AddSessionConfigEntry__PID=0x460df0 options=%di key=+0(%si):string value=+0(%dx):string'

(several -a in one perf probe call). The address is written unchanged into
tracefs' uprobe_events, where the kernel takes it as an offset in the file
(OrtApiFunction.file_offset). perf appends `__return` to a return probe's event
name; it refuses a GROUP/EVENT form ("must follow C symbol-naming rule"), and an
event name that exists in any group ("event "Run" already exists"), hence the
owner's pid in the event name as well as in the group. Arguments
use the kprobe-tracer fetch syntax (no debug info needed): x86-64 passes the first
arguments in %di, %si, %dx, %cx, %r8, %r9, and returns in %ax. `perf probe -d
'GROUP:*'` removes a group; on a group that no longer exists it exits 254 with
"does not hit any event".

Probes are system-wide state that outlives the process adding them, so their
group names their owner: `ortprof_<pid>_<start>`, the start being the process's
start time (/proc/PID/stat), which tells a reused pid apart. `installed_uprobes`
removes its group when the block ends, however it ends (an exception, Ctrl+C,
SIGTERM); probes of an ortprof that was killed are removed by the next one
(`remove_stale`, run before adding) and by `ortprof doctor`, never those of an
ortprof still running.

Cost, measured on this project's test machine (2-vCPU AMD EPYC VM, kernel 6.18,
perf 6.1; tests/c/ortapi_client.c --calls): a loop calling the probed
SetIntraOpNumThreads takes 2.2 ns per call without probes, 12-19 us per call with
its entry and return probes under `perf record` (the range is the machine's load
from run to run), 11-15 us with the entry probe alone: the breakpoint trap at the
entry is the cost; the return probe and writing the samples add ~1-3 us. On a
2.4 ms Run() (300 runs) the client's own p50 moves less than run-to-run noise
(2353-2386 us with and without). Fine for Run and session set-up; not for
functions called in tight loops.
"""
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ...errors import EnvironmentProblem, InputError
from ...stopping import STOP_SIGNALS, stop_signals_raise_interrupted
from ...symbols.ortapi import API_FUNCTIONS, OrtApiTable, read_ort_api

GROUP_PREFIX = "ortprof_"
RETURN_SUFFIX = "__return"      # perf probe appends it to the event name of a return probe
# perf probe wants event names unique on the machine, whatever their group: an event is
# FUNCTION__PID (C API function names have no double underscore).
TAG_SEPARATOR = "__"
PERF_PROBE_TIMEOUT = 60
_NOTHING_TO_DELETE = "does not hit any event"

# What each probe fetches (kprobe-tracer fetch arguments; the C API's parameter order).
# Strings are read from the process's memory when the probe fires.
ENTRY_ARGUMENTS: Dict[str, Tuple[str, ...]] = {
    "CreateSession": ("model=+0(%si):string", "options=%dx"),
    "CreateSessionFromArray": ("model_bytes=%dx:u64", "options=%cx"),
    "Run": ("session=%di",),
    "RunWithBinding": ("session=%di",),
    "RunAsync": ("session=%di",),
    "CreateSessionOptions": (),
    "SetSessionExecutionMode": ("options=%di", "mode=%si:s32"),
    "SetSessionGraphOptimizationLevel": ("options=%di", "level=%si:s32"),
    "SetIntraOpNumThreads": ("options=%di", "threads=%si:s32"),
    "SetInterOpNumThreads": ("options=%di", "threads=%si:s32"),
    "AddSessionConfigEntry": ("options=%di", "key=+0(%si):string", "value=+0(%dx):string"),
    "DisablePerSessionThreads": ("options=%di",),
    "CreateEnvWithGlobalThreadPools": ("log_level=%di:s32", "log_id=+0(%si):string"),
    "ReleaseSession": ("session=%di",),
    "ReleaseSessionOptions": ("options=%di",),
}
# The functions returning OrtStatus* (NULL: success); the Release functions return nothing.
RETURN_ARGUMENTS: Dict[str, Tuple[str, ...]] = {
    name: () if name.startswith("Release") else ("status=%ax",) for name in ENTRY_ARGUMENTS}
PROBED_FUNCTIONS: Tuple[str, ...] = tuple(function.name for function in API_FUNCTIONS)


# -- owners ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Owner:
    """The ortprof process a probe group belongs to."""
    pid: int
    start: int      # start time in clock ticks after boot (/proc/PID/stat field 22)

    @property
    def group(self) -> str:
        return f"{GROUP_PREFIX}{self.pid}_{self.start}"


_GROUP = re.compile(re.escape(GROUP_PREFIX) + r"(\d+)_(\d+)$")


def process_start(pid: int) -> Optional[int]:
    """Start time of process `pid` (clock ticks after boot), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            stat = stream.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()     # the command name may hold spaces and parentheses
    return int(fields[19]) if len(fields) > 19 else None


def current_owner() -> Owner:
    start = process_start(os.getpid())
    if start is None:
        raise EnvironmentProblem("cannot read /proc/self/stat: is /proc mounted?")
    return Owner(os.getpid(), start)


def group_owner(group: str) -> Optional[Owner]:
    """The owner a group's name encodes; None for a group ortprof did not name."""
    match = _GROUP.match(group)
    return Owner(int(match.group(1)), int(match.group(2))) if match else None


def owner_alive(owner: Owner) -> bool:
    return process_start(owner.pid) == owner.start


# -- perf probe ----------------------------------------------------------------------------
def _perf_probe(perf: str, *args: str) -> subprocess.CompletedProcess:
    # A session of its own: Ctrl+C at the terminal reaches ortprof, which decides, not perf
    # halfway through writing uprobe_events.
    try:
        return subprocess.run([perf, "probe", *args], capture_output=True, text=True,
                              timeout=PERF_PROBE_TIMEOUT, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"perf probe {' '.join(args)} did not finish within {PERF_PROBE_TIMEOUT} s")
    except OSError as exc:
        raise EnvironmentProblem(f"{perf} does not run: {exc.strerror}")


def _complaint(stderr: str) -> str:
    """perf probe's stderr as one line, without its usage help."""
    lines = []
    for line in (stderr or "").splitlines():
        line = line.strip()
        if not line or line.startswith(("Usage:", "or:", "-")):
            continue
        lines.append(line[len("Error:"):].strip() if line.startswith("Error:") else line)
    return " ".join(lines)


def _added_events(stderr: str) -> List[str]:
    """GROUP:EVENT of each probe perf reports as added ("Added new event(s):" then one line each)."""
    events, listing = [], False
    for line in (stderr or "").splitlines():
        if line.startswith("Added new event"):
            listing = True
        elif listing and line.startswith("  ") and " (on " in line:
            events.append(line.split()[0])
        elif listing and line.strip():
            listing = False
    return events


def list_groups(perf: str) -> Dict[str, List[str]]:
    """Probe group -> its event names, of every probe event defined on this machine
    (`perf probe -l`; as root perf mounts tracefs first when it is not mounted)."""
    done = _perf_probe(perf, "-l")
    if done.returncode != 0:
        raise EnvironmentProblem(f"perf probe -l failed: {_complaint(done.stderr) or done.returncode}")
    groups: Dict[str, List[str]] = {}
    for line in done.stdout.splitlines():
        match = re.match(r"\s+([A-Za-z_][\w.]*):(\w+)\s+\(on ", line)
        if match:
            groups.setdefault(match.group(1), []).append(match.group(2))
    return groups


def remove_group(perf: str, group: str) -> None:
    """Remove every event of `group`; a group that no longer exists is not an error."""
    done = _perf_probe(perf, "-d", f"{group}:*")
    if done.returncode != 0 and _NOTHING_TO_DELETE not in done.stderr:
        raise EnvironmentProblem(f"perf probe could not remove the uprobes of {group}: "
                                 f"{_complaint(done.stderr) or done.returncode}; "
                                 f"remove them with `perf probe -d '{group}:*'`")


def remove_stale(perf: str) -> List[str]:
    """Remove the probe groups of ortprof processes that are gone (killed before they could
    remove them); those of running ones stay. Returns the groups removed."""
    removed = []
    for group in list_groups(perf):
        owner = group_owner(group)
        if owner is not None and not owner_alive(owner):
            remove_group(perf, group)
            removed.append(group)
    return removed


def event_name(function: str, tag: str) -> str:
    """An entry probe's event name: the function, then what makes it unique on the machine."""
    return f"{function}{TAG_SEPARATOR}{tag}"


def event_function(event: str) -> Tuple[str, str, bool]:
    """(function, tag, is a return probe) of an event name event_name made (perf may have added
    RETURN_SUFFIX)."""
    returning = event.endswith(RETURN_SUFFIX)
    if returning:
        event = event[:-len(RETURN_SUFFIX)]
    function, _, tag = event.partition(TAG_SEPARATOR)
    return function, tag, returning


def probe_definitions(group: str, tag: str, table: OrtApiTable, functions: Sequence[str]) -> List[str]:
    """perf probe -a definitions of an entry and a return probe on each of `functions`."""
    definitions = []
    for name in functions:
        if name not in ENTRY_ARGUMENTS:
            raise InputError(f"no probe is defined for {name}; probed: {', '.join(ENTRY_ARGUMENTS)}")
        place = f"{group}:{event_name(name, tag)}=0x{table.function(name).file_offset:x}"
        definitions.append(" ".join((place, *ENTRY_ARGUMENTS[name])))
        definitions.append(" ".join((place + "%return", *RETURN_ARGUMENTS[name])))
    return definitions


_PROCESS_ROOT = re.compile(r"/proc/(\d+)/root(/.*)$")


def probe_target(path: str) -> List[str]:
    """perf probe's arguments naming the file: `-x PATH`, resolved. perf resolves `-x` in its own
    mount namespace (a /proc/PID/root path too, which then names another file or none), so a file
    reached through /proc/PID/root that is not the same file at that path here (a container's) is
    named as the process names it, with `--target-ns PID`: perf enters the process's mount
    namespace to read it and to write the probe (the kernel resolves the path there)."""
    match = _PROCESS_ROOT.match(path)
    if match is None:
        return ["-x", os.path.realpath(path)]
    pid, inner = match.groups()
    try:
        theirs, ours = os.stat(path), os.stat(inner)
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
            return ["-x", os.path.realpath(inner)]
    except OSError:
        pass
    return ["--target-ns", pid, "-x", inner]


class Uprobes:
    """Entry and return uprobes on C API functions of ORT libraries, in one group owned by this
    process. Event names carry the owner's pid: a group left by a dead process with the same pid
    would clash, so remove_stale() comes first (installed_uprobes does it)."""

    def __init__(self, perf: str, owner: Optional[Owner] = None):
        self.perf = perf
        self.owner = owner or current_owner()
        self.group = self.owner.group
        self.events: List[str] = []     # GROUP:EVENT, for perf record -e

    def add(self, library: str, functions: Sequence[str] = PROBED_FUNCTIONS, table: Optional[OrtApiTable] = None,
            library_tag: str = "") -> List[str]:
        """Probe `functions` of `library` (those it has: an ORT older than a function's API
        version lacks it); returns the events added. A second library probed by the same
        owner needs a `library_tag` (letters, digits) to tell its events apart."""
        table = table or read_ort_api(library)
        present = [name for name in functions if name in table.functions]
        if not present:
            raise InputError(f"{library}: none of {', '.join(functions)} is in its OrtApi table")
        return self._add(library, probe_definitions(self.group, self._tag(library_tag), table, present))

    def add_at(self, binary: str, file_offset: int, name: str) -> List[str]:
        """An entry probe `name` at `file_offset` of any ELF file (doctor probes an executable's entry point)."""
        return self._add(binary, [f"{self.group}:{event_name(name, self._tag(''))}=0x{file_offset:x}"])

    def _tag(self, library_tag: str) -> str:
        return f"{self.owner.pid}{'_' + library_tag if library_tag else ''}"

    def _add(self, binary: str, definitions: Sequence[str]) -> List[str]:
        arguments = probe_target(binary)
        for definition in definitions:
            arguments += ["-a", definition]
        done = _perf_probe(self.perf, *arguments)
        added = _added_events(done.stderr)
        self.events += added
        if done.returncode != 0:
            raise EnvironmentProblem(f"perf probe could not add uprobes to {binary}: "
                                     f"{_complaint(done.stderr) or done.returncode}")
        return added

    def record_arguments(self) -> List[str]:
        """`-e EVENT` for each event, for perf record."""
        return [argument for event in self.events for argument in ("-e", event)]

    def remove(self) -> None:
        """Remove the group (all its events, also any added before a failure)."""
        with _stop_signals_deferred():
            remove_group(self.perf, self.group)
        self.events = []


@contextlib.contextmanager
def installed_uprobes(perf: str, library: str, functions: Sequence[str] = PROBED_FUNCTIONS,
                      table: Optional[OrtApiTable] = None,
                      note: Optional[Callable[[str], None]] = None) -> Iterator[Uprobes]:
    """Uprobes on `functions` of `library` while the block runs; removed when it ends, by an
    exception, Ctrl+C or SIGTERM too. Stale probes of dead ortprof processes are removed first.
    A failure to remove raises EnvironmentProblem, or, when the block is already ending by an
    exception, is passed to `note` (default: one line on stderr) and the exception goes on."""
    remove_stale(perf)
    probes = Uprobes(perf)
    with _sigterm_raises_interrupted():
        try:
            probes.add(library, functions, table)
            yield probes
        except BaseException:
            try:
                probes.remove()
            except EnvironmentProblem as problem:
                (note or _print_problem)(str(problem))
            raise
        else:
            probes.remove()


def _print_problem(text: str) -> None:
    print(f"ortprof: {text}", file=sys.stderr)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _sigterm_raises_interrupted() -> Iterator[None]:
    """Inside, SIGTERM raises stopping.Interrupted (as Ctrl+C raises KeyboardInterrupt) instead
    of ending the process on the spot, so the probes are removed. A command that already
    handles SIGTERM (record, inside stop_signals_raise_interrupted) keeps its handlers."""
    if _in_main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        with stop_signals_raise_interrupted():
            yield
    else:
        yield


@contextlib.contextmanager
def _stop_signals_deferred() -> Iterator[None]:
    """Ctrl+C or SIGTERM arriving inside are delivered when the block ends: a KeyboardInterrupt
    raised in subprocess.run would kill `perf probe -d` halfway and leave probes behind."""
    if not _in_main_thread():
        yield
        return
    caught: List[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])
