"""Frames -> display names and module kinds; a sample's raw CPU class.

Raw classes are decided per sample from its stack alone; whether "spin" means
idle worker spin or the caller's end-of-section spin is decided later, from
the thread's role.
"""
import os
import re
from functools import lru_cache

from .spin_names import classify_named_frames

# Module kinds, by DSO path.
ORT, KERNEL, PYTHON, SYSLIB, BLAS, OTHER = "ort", "kernel", "python", "syslib", "blas", "other"

# Raw per-sample classes.
SPIN, SYNC, KERNEL_CLASS, PYTHON_CLASS, COMPUTE, OTHER_CLASS = "spin", "sync", "kernel", "python", "compute", "other"

_SYSLIBS = ("libc.so", "libc-", "libpthread", "ld-linux", "libstdc++", "libgcc_s", "libm.so", "libm-",
            "libgomp", "librt", "libdl")
# Frames (leaf-ward) that mean "waiting on a lock, condition or semaphore".
_SYNC_NAMES = re.compile(
    r"futex|pthread_cond_|pthread_mutex_|__lll_lock|lll_lock|sem_(timed|clock)?wait|sem_post|"
    r"nsync_|OrtCondVar|OrtMutex|condition_variable|pthread_rwlock|__pthread_clockjoin|"
    r"do_futex|futex_wait|futex_wake|__x64_sys_futex|PyThread_acquire_lock|take_gil|drop_gil")
SYNC_SCAN_DEPTH = 8   # how far from the leaf a wait primitive still counts


@lru_cache(maxsize=4096)
def module_kind(dso):
    if dso.startswith("[kernel") or dso.startswith("[vdso"):
        return KERNEL
    base = os.path.basename(dso)
    if "onnxruntime" in base:
        return ORT
    if base.startswith("libpython") or re.match(r"python\d", base) or base == "python":
        return PYTHON
    if "openblas" in base or "libblas" in base or "mkl" in base:
        return BLAS
    if any(base.startswith(lib) for lib in _SYSLIBS):
        return SYSLIB
    return OTHER


@lru_cache(maxsize=200_000)
def short_name(name):
    """Readable names: template arguments and parameter lists of long C++ names folded."""
    if len(name) <= 100:
        return name
    out, depth = [], 0
    for char in name:
        if char in "<(":
            if depth == 0:
                out.append("<…>" if char == "<" else "(…)")
            depth += 1
        elif char in ">)" and depth:
            depth -= 1
        elif depth == 0:
            out.append(char)
    return "".join(out)


# What is read from a binary, and which figures are lost when it cannot be.
_SYMBOLS = ("its symbols", "its frames that perf did not name stay addresses and spin-wait in them "
                           "is counted as compute")
_LINES = ("its source lines", "its hot spots have no file:line")
# perf's names for executable memory that is no ELF file (anonymous, JIT maps, memfd): no lines to read.
_NOT_A_BINARY = re.compile(r"^//|^/memfd:|/perf-\d+\.map$")


class StackSymbolizer:
    """Names frames, using the ORT symbolizer for frames perf could not name.

    A binary whose symbols or source lines cannot be read adds one line to
    `notes` (the run's notes, when loading passes them) saying what is missing
    and why: the figures it costs must not change silently."""

    def __init__(self, ort_symbols=None, source_lines=True, notes=None):
        # ort_symbols: callable dso_path -> object with name(addr)/is_spin(addr), or None.
        # source_lines: off for perf text from another machine, whose binaries may differ from ours.
        self.ort_symbols = ort_symbols
        self.source_lines = source_lines
        self.notes = notes if notes is not None else []
        self.problems = {}      # dso -> its note (the first thing that failed on it)
        self._dso_cache = {}
        self._labels = {}
        self._lines_cache = {}

    def _dso(self, dso):
        if dso not in self._dso_cache:
            symbols = None
            if self.ort_symbols is not None and module_kind(dso) == ORT:
                symbols = self._read(dso, _SYMBOLS, lambda: self.ort_symbols(dso))
            self._dso_cache[dso] = symbols
            self._labels[dso] = self._decoded_labels(symbols)
        return self._dso_cache[dso]

    def _read(self, dso, reading, read):
        """read(), or None when it fails; the failure becomes the DSO's note. Bad input (the file
        gone, unreadable, not ELF) and a missing dependency say why; anything else is a bug in
        ortprof.symbols, kept from failing the whole report but named as one."""
        try:
            return read()
        except Exception as error:      # noqa: BLE001 - every failure is classified and noted below
            from ..symbols.elfinfo import READ_ERRORS
            what, cost = reading
            if isinstance(error, READ_ERRORS + (ImportError,)):
                problem = f"cannot read {what} ({_reason(error, dso)})"
            else:
                problem = f"internal error (a bug in ortprof) while reading {what}: {type(error).__name__}: {error}"
            if dso not in self.problems:
                self.problems[dso] = f"{dso}: {problem}; {cost}"
                self.notes.append(self.problems[dso])
            return None

    def frame_name(self, frame):
        if frame.symbol is not None:
            return short_name(frame.symbol)
        symbols = self._dso(frame.dso)
        if symbols is not None:
            name = symbols.name(frame.addr)
            label = self._labels.get(frame.dso, {}).get(symbols.function_start(frame.addr))
            return f"{name} ({label})" if label else name
        return f"{os.path.basename(frame.dso) or '?'}+0x{frame.addr:x}"

    @staticmethod
    def _decoded_labels(symbols):
        """On a stripped binary, say what decoding found: SpinPause and the functions with spin loops."""
        if symbols is None or symbols.symbol_status != "stripped":
            return {}
        labels = {start: "spin loop" for start, _ in symbols.spin_functions}
        labels.update({start: "SpinPause" for start, _ in symbols.spin_primitives})
        return labels

    def source_line(self, frame):
        """"file:line" of a frame where its DSO carries DWARF (or has a debug file), else None."""
        dso = frame.dso
        if not self.source_lines or module_kind(dso) == KERNEL or not dso.startswith("/") \
                or _NOT_A_BINARY.search(dso):
            return None
        symbols = self._line_symbols(dso)
        if symbols is None:
            return None
        line = self._read(dso, _LINES, lambda: symbols.source_line(frame.addr))
        return f"{line.file}:{line.line}" if line else None

    def _line_symbols(self, dso):
        if dso not in self._lines_cache:
            self._lines_cache[dso] = self._read(dso, _LINES, lambda: self._symbols_with_lines(dso))
        return self._lines_cache[dso]

    def _symbols_with_lines(self, dso):
        from ..symbols.debugfile import find_debug_file
        from ..symbols.elfinfo import DWARF, read_elf_info
        from ..symbols.resolver import Symbolizer
        info = read_elf_info(dso)   # headers only: most DSOs have no lines, skip them cheaply
        if info.symbol_status != DWARF and not find_debug_file(dso, info):
            return None
        symbols = self._dso(dso) if module_kind(dso) == ORT else Symbolizer().for_dso(dso)
        return symbols if symbols is not None and symbols.has_lines else None

    def is_spin_address(self, frame, caller=None):
        """Decoded spin site; the caller frame (same DSO) catches the spin loop's callees."""
        symbols = self._dso(frame.dso)
        if symbols is None:
            return False
        caller_addr = caller.addr if caller is not None and caller.dso == frame.dso else None
        return bool(symbols.is_spin(frame.addr, caller=caller_addr))


def _reason(error, dso):
    """The error's message without the path it starts with: the note names the DSO already."""
    message = str(error) or type(error).__name__
    for path in (dso, os.path.realpath(dso)):
        if message.startswith(f"{path}: "):
            return message[len(path) + 2:]
    return message


def classify_stack(frames, names, symbolizer):
    """Raw class of one CPU sample. `frames` and `names` are leaf first."""
    if not frames:
        return OTHER_CLASS
    leaf = frames[0]
    kinds = [module_kind(frame.dso) for frame in frames]
    if kinds[0] == ORT and symbolizer.is_spin_address(leaf, frames[1] if len(frames) > 1 else None):
        return SPIN
    if classify_named_frames(names):   # symbolized builds: the frames perf named
        return SPIN
    for name in names[:SYNC_SCAN_DEPTH]:
        if _SYNC_NAMES.search(name):
            return SYNC
    if kinds[0] == KERNEL:
        return KERNEL_CLASS
    if kinds[0] == ORT or kinds[0] == BLAS and ORT in kinds:
        return COMPUTE
    if kinds[0] == SYSLIB and ORT in kinds:
        return COMPUTE  # memcpy/malloc/libm doing ORT's work
    if kinds[0] == PYTHON:
        return PYTHON_CLASS
    return OTHER_CLASS

