"""The symbolization façade the report uses: one `DsoSymbols` per binary, cached by build-id.

    symbolizer = Symbolizer()
    ort = symbolizer.for_dso(".../onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so")
    ort.name(0x10e5222)              # 'ort!fn_10e51e0' (stripped wheel) or the real name
    ort.is_spin(0x10e5222)           # True: inside SpinPause
    ort.spin_kind(0x10e7339, caller=0x10e8523)

Addresses are ELF virtual addresses, as `perf script` prints them for frames
of a DSO. name() and is_spin() are O(log n) and memoized: the report calls
them for every frame.
"""
import os
import time
from typing import Dict, Iterable, List, Optional, Tuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import InputError
from . import cache
from .debugfile import DEFAULT_ROOTS, find_debug_file
from .elfinfo import DWARF, read_elf_info
from .functions import Function, FunctionIndex, build_function_index, dso_prefix
from .spin import SpinMap, find_spin_map


class DsoSymbols:
    """Function names, spin classification and source lines for one binary."""

    def __init__(self, path, build_id, symbol_status, debug_file, functions: FunctionIndex,
                 spin: SpinMap, from_cache=False, build_seconds=0.0):
        self.path = path
        self.build_id = build_id
        self.symbol_status = symbol_status      # of the symbols used: stripped | symtab | dwarf
        self.debug_file = debug_file            # the separate debug file used, if any
        self.functions = functions
        self.spin = spin
        self.from_cache = from_cache
        self.build_seconds = build_seconds      # time to build or load this object
        self._names: Dict[int, str] = {}
        self._spin_kinds: Dict[Tuple[int, Optional[int]], Optional[Tuple[str, Optional[int]]]] = {}
        self._lines = None

    # -- per-frame lookups (hot) ------------------------------------------------

    def name(self, addr) -> str:
        """Function name at `addr`: the symbol, or `ort!fn_<start>` on a stripped binary."""
        found = self._names.get(addr)
        if found is None:
            found = self._names[addr] = self.functions.name(addr)
        return found

    def function(self, addr) -> Optional[Function]:
        return self.functions.function_at(addr)

    def function_start(self, addr) -> Optional[int]:
        return self.functions.start_of(addr)

    def spin_kind(self, addr, caller=None) -> Optional[Tuple[str, Optional[int]]]:
        """(rule, start of the spinning function) if a sample whose leaf is `addr` is spin-wait.

        `caller` is the return address of the next frame when it is in this
        binary too. Rules: `spin-primitive` (leaf in SpinPause),
        `spin-loop` (leaf in a spin loop), `spin-loop-callee` (leaf in a
        function the spin loop calls directly: queue polling, stealing)."""
        key = (addr, caller)
        if key in self._spin_kinds:
            return self._spin_kinds[key]
        found = self.spin.classify(addr, caller, self.function_start(addr))
        self._spin_kinds[key] = found
        return found

    def is_spin(self, addr, caller=None) -> bool:
        return self.spin_kind(addr, caller) is not None

    # -- per-binary facts ------------------------------------------------------

    @property
    def spin_functions(self) -> List[Tuple[int, str]]:
        """(start, name) of functions holding a spin loop (WorkerLoop, RunInParallel, ...)."""
        return [(start, self.name(start)) for start in self.spin.spin_functions]

    @property
    def spin_primitives(self) -> List[Tuple[int, str]]:
        """(start, name) of out-of-line spin functions (SpinPause), empty when PAUSE is inlined."""
        return [(p.start, self.name(p.start)) for p in self.spin.primitives]

    @property
    def has_lines(self) -> bool:
        return self.symbol_status == DWARF

    def source_line(self, addr):
        """`lines.SourceLine` of `addr` when DWARF is at hand, else None. Meant for a few addresses."""
        if not self.has_lines:
            return None
        if self._lines is None:
            from .lines import LineTable    # pyelftools' DWARF layer is only needed here
            self._lines = LineTable(self.debug_file or self.path)
        return self._lines.lookup(addr)

    def source_lines(self, addrs: Iterable[int]):
        return {addr: self.source_line(addr) for addr in addrs}

    def close(self):
        if self._lines is not None:
            self._lines.close()
            self._lines = None

    def summary(self) -> dict:
        """Facts for reports and --json."""
        return {
            "path": self.path, "build_id": self.build_id, "symbol_status": self.symbol_status,
            "debug_file": self.debug_file, "functions": len(self.functions),
            "named_functions": self.functions.named_count(), "spin_style": self.spin.style,
            "spin_sites": [{"addr": hex(s.addr), "instruction": s.mnemonic,
                            "function": self.name(s.function_start)} for s in self.spin.sites],
            "spin_primitives": [name for _, name in self.spin_primitives],
            "spin_functions": [name for _, name in self.spin_functions],
        }

    # -- cache -----------------------------------------------------------------

    def to_cache(self) -> dict:
        return {"build_id": self.build_id, "path": self.path, "symbol_status": self.symbol_status,
                "debug_file": self.debug_file, "functions": self.functions.to_json(),
                "spin": self.spin.to_json()}

    @classmethod
    def from_cache(cls, entry, path=None):
        return cls(path or entry["path"], entry["build_id"], entry["symbol_status"], entry["debug_file"],
                   FunctionIndex.from_json(entry["functions"]), SpinMap.from_json(entry["spin"]),
                   from_cache=True)


def _build(path, info, debug_file, demangle) -> DsoSymbols:
    symbol_status = read_elf_info(debug_file).symbol_status if debug_file else info.symbol_status
    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            debug_stream = open(debug_file, "rb") if debug_file else None
            try:
                debug_elf = ELFFile(debug_stream) if debug_stream else None
                functions = build_function_index(elf, debug_elf, dso_prefix(path), demangle)
            finally:
                if debug_stream:
                    debug_stream.close()
            spin = find_spin_map(elf, stream, functions)
    except (ELFError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read functions ({exc})")
    return DsoSymbols(path, info.build_id, symbol_status, debug_file, functions, spin)


class Symbolizer:
    """Builds and caches DsoSymbols; one instance per report."""

    def __init__(self, cache_dir=None, use_cache=True, debug_roots: Iterable[str] = DEFAULT_ROOTS,
                 demangle=True):
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.debug_roots = tuple(debug_roots)
        self.demangle = demangle
        self._by_path: Dict[str, DsoSymbols] = {}

    def _cache_directory(self):
        from pathlib import Path
        return Path(self.cache_dir) if self.cache_dir else cache.cache_dir()

    def for_dso(self, path, expected_build_id=None) -> DsoSymbols:
        """Symbols of the binary at `path` (built once, then read from the cache).

        Raises InputError if the file is missing or not ELF, or if its build-id
        differs from `expected_build_id` (the binary changed since recording)."""
        real = os.path.realpath(path)
        known = self._by_path.get(real)
        if known is not None:
            return known
        began = time.perf_counter()
        info = read_elf_info(real)
        if expected_build_id and info.build_id and info.build_id != expected_build_id:
            raise InputError(f"{path}: build-id {info.build_id} differs from the recorded "
                             f"{expected_build_id}: the binary changed since the recording")
        debug_file = None
        if info.symbol_status != DWARF:
            debug_file = find_debug_file(real, info, self.debug_roots)
        key = cache.cache_key(info.build_id, real)
        symbols = None
        if self.use_cache:
            entry, _ = cache.load(key, self._cache_directory())   # one that cannot be used is rebuilt
            if entry is not None and entry.get("debug_file") == debug_file:
                symbols = DsoSymbols.from_cache(entry, real)
        if symbols is None:
            symbols = _build(real, info, debug_file, self.demangle)
            if self.use_cache:
                cache.store(key, symbols.to_cache(), self._cache_directory())
        symbols.build_seconds = time.perf_counter() - began
        self._by_path[real] = symbols
        return symbols

    def for_build_id(self, build_id) -> DsoSymbols:
        """Cached symbols of a binary that is no longer on disk (e.g. a run from another machine).

        Raises InputError saying why when the cache has no usable entry: none, or one that
        cannot be rebuilt without the binary (unreadable, or written by another version)."""
        if not self.use_cache:
            raise InputError("the symbol cache is off")
        entry, unusable = cache.load(build_id, self._cache_directory())
        if unusable:
            raise InputError(f"the symbol cache of build-id {build_id} is {unusable}")
        if entry is None:
            raise InputError(f"no symbol cache for build-id {build_id}")
        return DsoSymbols.from_cache(entry)

    def close(self):
        for symbols in self._by_path.values():
            symbols.close()
