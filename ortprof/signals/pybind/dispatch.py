"""Where InferenceSession.run's pybind11 dispatcher is in a running Python process's ORT module.

The wheel's onnxruntime_pybind11_state*.so links ORT statically and exports only its PyInit:
Python's run() never passes through libonnxruntime.so's C API, and the module has no symbol
for it. What it has is pybind11's function record of each bound method (records.py), whose
`impl` is the method's dispatcher. `find_run_dispatchers(pid)`:

1. finds the module in /proc/PID/maps (its exact file, by device and inode, as a path in
   ortprof's mount namespace: the process's own path, else /proc/PID/root/PATH);
2. reads its build-id; offsets already found for that build-id come from the cache
   (<ortprof cache>/pybind/<build-id>.json, versioned by this package's code like the symbol
   cache);
3. otherwise reads the process's heap through /proc/PID/mem (root, or the process's own user
   with ptrace access) and finds the records of InferenceSession's run methods there
   (records.scan). Nothing of the target runs: no helper imports its module, so no code of
   the target's (the module's initialisers, a sitecustomize) ever runs with ortprof's
   privileges, whoever the target's user is. Reading the memory the module already built
   needs neither the target's interpreter, its sys.path, nor its mount namespace;
4. checks each dispatcher in the file: a function start in .eh_frame, and its exits (the `ret`
   instructions timing.py probes, code.py) all known.

The layout of the records is pybind11's and changes between its releases: a module whose
records match none of records.KNOWN_LAYOUTS gives "pybind11's function record layout in this
wheel is not the one ortprof knows". The check runs once per build-id; the cache keeps the
result (offsets only, not addresses: every process maps the module elsewhere).
"""
import json
import mmap
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ...errors import EnvironmentProblem, InputError
from ...symbols.cache import code_version, writer_sources
from ..capi.maps import DELETED, Mapping, parse_maps, read_maps, reachable_path
from . import records as records_module
from .code import CodeImage, ExitsUnknown, function_exits

MODULE_PATTERN = re.compile(r"(^|/)onnxruntime_pybind11_state[^/]*\.so$")
CLASS_NAME = "InferenceSession"
# InferenceSession's bound run variants, the first required (1.15.1 has no run_async)
RUN_METHODS: Tuple[str, ...] = ("run", "run_with_iobinding", "run_with_ort_values", "run_with_ortvaluevector",
                                "run_async")
REQUIRED_METHOD = "run"
SCAN_BUDGET = 8 << 30             # bytes of the process's memory read at most
LAYOUT_UNKNOWN = "pybind11's function record layout in this wheel is not the one ortprof knows"
CACHE_SUBDIRECTORY = "pybind"
# the modules whose code decides what a cache entry holds
WRITER_MODULES = ("dispatch", "records", "code")


# -- what is found -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DispatchSite:
    method: str                   # "run"
    entry: int                    # file offset of the dispatcher (uprobe on entry)
    exits: Tuple[int, ...]        # file offsets of its ret instructions
    nargs: int                    # its Python arguments, self included
    overload: int = 0

    @property
    def probe_name(self) -> str:
        """The base of its events' names: py_run, py_run_with_iobinding, py_run_o1 (overload 1)."""
        return f"py_{self.method}" + (f"_o{self.overload}" if self.overload else "")

    def to_json(self) -> dict:
        return {"method": self.method, "entry": self.entry, "exits": list(self.exits), "nargs": self.nargs,
                "overload": self.overload}

    @classmethod
    def from_json(cls, data: dict) -> "DispatchSite":
        return cls(data["method"], int(data["entry"]), tuple(int(x) for x in data["exits"]), int(data["nargs"]),
                   int(data.get("overload", 0)))


@dataclass(frozen=True)
class DispatchSites:
    pid: int
    module: str                   # the module file, as a path in ortprof's mount namespace (perf probe -x)
    module_in_process: str        # its path as /proc/PID/maps says
    build_id: Optional[str]
    layout: str                   # records.KNOWN_LAYOUTS name ("flags9")
    sites: Tuple[DispatchSite, ...]
    from_cache: bool = False
    scanned_bytes: int = 0        # of the process's memory, when not from the cache
    notes: Tuple[str, ...] = field(default_factory=tuple)

    def site(self, method: str, overload: int = 0) -> Optional[DispatchSite]:
        return next((s for s in self.sites if s.method == method and s.overload == overload), None)

    @property
    def methods(self) -> List[str]:
        return list(dict.fromkeys(site.method for site in self.sites))


# -- /proc ----------------------------------------------------------------------------------
def module_mappings(mappings: Sequence[Mapping], pid: int) -> List[Mapping]:
    """The mappings of the ORT pybind module; InputError when the process has none, or maps
    two different files of that name."""
    found = [m for m in mappings if MODULE_PATTERN.search(m.path.replace(" (deleted)", ""))]
    if not found:
        raise InputError(f"process {pid} has no onnxruntime_pybind11_state module mapped: it is not a Python "
                         "process that imported onnxruntime (yet)")
    files = {(m.device, m.inode) for m in found}
    if len(files) > 1:
        raise InputError(f"process {pid} maps {len(files)} different onnxruntime_pybind11_state files "
                         f"({', '.join(sorted({m.path for m in found}))}): ortprof cannot tell which one serves "
                         "InferenceSession")
    return found


def module_path(pid: int, mapping: Mapping) -> str:
    """The mapped module as a path in ortprof's mount namespace (maps.reachable_path)."""
    if mapping.path.endswith(DELETED):
        raise EnvironmentProblem(f"process {pid} maps {mapping.path}: the module file was replaced after the "
                                 "process loaded it (an upgrade?), uprobes cannot be put on it; restart the process")
    path = reachable_path(pid, mapping)
    if path is None:
        raise EnvironmentProblem(f"process {pid} maps {mapping.path}, which ortprof cannot reach as the same file "
                                 f"(neither {mapping.path} nor /proc/{pid}/root{mapping.path} is device "
                                 f"{mapping.device[0]}:{mapping.device[1]} inode {mapping.inode})")
    return path


class ProcessMemory:
    """Reads of another process's memory through /proc/PID/mem (ptrace access: root, or its user)."""

    def __init__(self, pid: int):
        self.pid = pid
        try:
            self.fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
        except FileNotFoundError:
            raise InputError(f"no process {pid}") from None
        except PermissionError:
            raise EnvironmentProblem(f"cannot read the memory of process {pid} (/proc/{pid}/mem): ortprof needs "
                                     "root (or the process's user, with ptrace allowed by "
                                     "kernel.yama.ptrace_scope)") from None

    def read(self, address: int, size: int) -> Optional[bytes]:
        try:
            return os.pread(self.fd, size, address)
        except (OSError, OverflowError, ValueError):
            return None

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "ProcessMemory":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def scan_regions(mappings: Sequence[Mapping]) -> List[Tuple[int, int]]:
    """Where malloc puts pybind11's records: [heap] first, then the anonymous private
    read-write mappings (other arenas, mmap'ed chunks, another allocator's), by address."""
    heap = [(m.start, m.end) for m in mappings if m.path == "[heap]" and m.readable_private_data]
    anonymous = [(m.start, m.end) for m in mappings if m.path == "" and m.readable_private_data]
    return heap + anonymous


# -- the module file ------------------------------------------------------------------------------
def _build_id(path: str) -> Optional[str]:
    from ...symbols.elfinfo import read_elf_info
    return read_elf_info(path).build_id


def load_code_image(path: str) -> CodeImage:
    """The module's code and .eh_frame functions (~0.3 s for ORT 1.31.1's 30 MB)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    from ...symbols.functions import read_fde_ranges
    try:
        with open(path, "rb") as stream:
            data = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
            elf = ELFFile(stream)
            if elf["e_machine"] != "EM_X86_64" or elf.elfclass != 64:
                raise InputError(f"{path}: not an x86-64 ELF file (ortprof reads pybind11 records on x86-64 only)")
            segments = [(s["p_vaddr"], s["p_offset"], s["p_filesz"]) for s in elf.iter_segments()
                        if s["p_type"] == "PT_LOAD"]
            fde_ranges = read_fde_ranges(elf)
    except (OSError, ELFError) as error:
        raise InputError(f"{path}: not a readable ELF file ({error})") from None
    if not fde_ranges:
        raise InputError(f"{path} has no .eh_frame: its dispatchers cannot be checked")
    return CodeImage(data, segments, fde_ranges)


# -- the cache ------------------------------------------------------------------------------------
# The cache's version is a digest of the code that writes it, as the symbol cache's.
CACHE_FORMAT = code_version(writer_sources(WRITER_MODULES, __package__))


def cache_dir() -> Path:
    """<ortprof cache>/pybind ($ORTPROF_CACHE_DIR, else $XDG_CACHE_HOME/ortprof or ~/.cache/ortprof)."""
    from ...demo.model import cache_dir as ortprof_cache_dir
    return Path(ortprof_cache_dir()) / CACHE_SUBDIRECTORY


def cache_key(build_id: Optional[str], path: str) -> str:
    from ...symbols.cache import cache_key as symbols_cache_key
    return symbols_cache_key(build_id, path)


def load_cached(key: str, directory: Optional[Path] = None) -> Optional[dict]:
    """The entry of `key` written by this version of the package; None otherwise."""
    path = (directory or cache_dir()) / f"{key}.json"
    try:
        with open(path, encoding="utf-8") as stream:
            entry = json.load(stream)
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
        return None
    return entry


def store_cached(key: str, entry: dict, directory: Optional[Path] = None) -> Optional[Path]:
    """Write atomically; None when the cache is not writable (the result is then only not kept)."""
    from ...symbols.cache import store
    return store(key, entry, directory or cache_dir(), version=CACHE_FORMAT)


def sites_entry(layout: str, sites: Sequence[DispatchSite]) -> dict:
    return {"layout": layout, "sites": [site.to_json() for site in sites]}


def sites_from_entry(entry: dict) -> Tuple[str, Tuple[DispatchSite, ...]]:
    return str(entry["layout"]), tuple(DispatchSite.from_json(site) for site in entry["sites"])


# -- finding ------------------------------------------------------------------------------------------
def process_address_to_offset(address: int, mappings: Sequence[Mapping]) -> Optional[int]:
    """File offset of a process address in one of `mappings` (of one file)."""
    for mapping in mappings:
        if mapping.start <= address < mapping.end:
            return address - mapping.start + mapping.offset
    return None


def select_sites(found: Sequence[records_module.FunctionRecord], module_maps: Sequence[Mapping],
                 image: CodeImage, pid: int, scanned: str) -> Tuple[str, Tuple[DispatchSite, ...]]:
    """The dispatch sites of InferenceSession's run methods among the records found, each
    checked in the file; raises when the layout does not hold."""
    ours = [r for r in found if r.class_name == CLASS_NAME and r.name in RUN_METHODS and r.is_method]
    if not found:
        raise EnvironmentProblem(f"{LAYOUT_UNKNOWN}: no pybind11 function record found in process {pid}'s "
                                 f"memory ({scanned}); known layouts: "
                                 f"{'; '.join(layout.description for layout in records_module.KNOWN_LAYOUTS)}")
    if not any(r.name == REQUIRED_METHOD and r.overload == 0 for r in ours):
        classes = sorted({r.class_name or "?" for r in found})
        raise EnvironmentProblem(f"{LAYOUT_UNKNOWN}: {len(found)} function records found in process {pid}'s "
                                 f"memory ({scanned}), none of {CLASS_NAME}.{REQUIRED_METHOD} "
                                 f"(classes seen: {', '.join(classes[:8])})")
    layouts = {r.layout for r in found}
    if len(layouts) > 1:
        raise EnvironmentProblem(f"{LAYOUT_UNKNOWN}: records of the same module decode with different layouts "
                                 f"({', '.join(sorted(layouts))})")
    layout = layouts.pop()
    by_key: Dict[Tuple[str, int], set] = {}
    for record in ours:
        by_key.setdefault((record.name, record.overload), set()).add(record.impl)
    sites = []
    for (method, overload), impls in sorted(by_key.items(), key=lambda item: (RUN_METHODS.index(item[0][0]), item[0][1])):
        if len(impls) > 1:
            raise EnvironmentProblem(f"process {pid} holds {len(impls)} different records of "
                                     f"{CLASS_NAME}.{method} (dispatchers at "
                                     f"{', '.join(f'{a:#x}' for a in sorted(impls))}): ortprof will not guess which")
        impl = impls.pop()
        offset = process_address_to_offset(impl, module_maps)
        if offset is None:
            raise EnvironmentProblem(f"{LAYOUT_UNKNOWN}: the dispatcher of {CLASS_NAME}.{method} ({impl:#x}) is "
                                     "not in the module's mappings")
        vaddr = image.vaddr(offset)
        try:
            exits = function_exits(image, vaddr, f"the dispatcher of {CLASS_NAME}.{method}")
        except ExitsUnknown as problem:
            if not image.is_function_start(vaddr):
                raise EnvironmentProblem(f"{LAYOUT_UNKNOWN}: {problem}") from None
            raise EnvironmentProblem(str(problem)) from None
        record = next(r for r in ours if r.name == method and r.overload == overload)
        sites.append(DispatchSite(method, offset, tuple(image.file_offset(a) for a in exits), record.nargs, overload))
    return layout, tuple(sites)


def find_run_dispatchers(pid: int, use_cache: bool = True, cache_directory: Optional[Path] = None,
                         budget: int = SCAN_BUDGET) -> DispatchSites:
    """The module and the dispatchers of InferenceSession's run methods in process `pid`."""
    mappings = read_maps(pid)
    module_maps = module_mappings(mappings, pid)
    in_process = module_maps[0].path
    path = module_path(pid, module_maps[0])
    build_id = _build_id(path)
    key = cache_key(build_id, path)
    if use_cache:
        entry = load_cached(key, cache_directory)
        if entry is not None:
            layout, sites = sites_from_entry(entry)
            return DispatchSites(pid, path, in_process, build_id, layout, sites, from_cache=True)
    code_ranges = [(m.start, m.end) for m in module_maps if "x" in m.perms]
    if not code_ranges:
        raise InputError(f"process {pid} maps {in_process} without an executable part")
    regions = scan_regions(mappings)
    with ProcessMemory(pid) as memory:
        result = records_module.scan(memory, regions, code_ranges, stop_after_class=CLASS_NAME, budget=budget)
    scanned = (f"{result.scanned_bytes >> 20} MiB in {result.regions} regions, {result.candidates} pointers into "
               f"its code, {result.heads} record-like")
    image = load_code_image(path)
    layout, sites = select_sites(result.records, module_maps, image, pid, scanned)
    if use_cache:
        store_cached(key, sites_entry(layout, sites), cache_directory)
    return DispatchSites(pid, path, in_process, build_id, layout, sites, scanned_bytes=result.scanned_bytes)
