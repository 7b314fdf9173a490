"""Where the C API functions of an ONNX Runtime library are, read from the file without running it.

Every non-Python ORT client (C, C++, C#, Java, Node, Rust, onnxruntime_perf_test)
reaches ORT through `OrtGetApiBase()->GetApi(version)`, which returns the
OrtApi table: function pointers in a fixed, append-only order. The library is
stripped (only `.dynsym`, where OrtGetApiBase is the one entry point of
interest), so the functions behind the table have no names; their places come
from the table itself:

1. OrtGetApiBase (a `.dynsym` function) is decoded with capstone: it returns
   the address of the OrtApiBase struct {GetApi, GetVersionString}.
2. The struct's slots are read through their dynamic relocations: with RELA
   the addend is the pointer (ORT's builds also leave it in the file's slot;
   lld leaves 0 there unless --apply-dynamic-relocs); a slot without a RELA
   relocation is read from the file (RELR relocations keep the addend in place).
3. GetApi is decoded along its paths to each `ret`: the path returning a
   table records the comparison of the requested version against
   ORT_API_VERSION (`lea edx,[rdi-1]; cmp edx,0x1e; ja fail` accepts 1..31),
   which gives the highest version the library serves.
4. The table's slots, read like the struct's, give each function's address.

Addresses are ELF virtual addresses (the library is linked at 0, so an
address is the function's distance from the library's load base). `perf probe
-x LIB 'name=0xADDR'` writes ADDR unchanged into tracefs' uprobe_events, where
the kernel takes it as an offset in the file: probes need `file_offset`. In the
executable segment of ORT's libraries both are equal (it maps file offset X at
address X); they differ in the data segment.

Nothing of the library runs in ortprof: it is read as a file.
"""
import mmap
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import InputError
from .elfinfo import read_elf_info
from .functions import _R_X86_64_RELATIVE, _dynamic_relocations

_R_X86_64_64 = 1
_POINTER = 8
_PF_X = 0x1
# Paths through GetApi are short (a compare, a branch, a lea, a ret); the error
# path calls fprintf. These bound the walk on an unexpected shape.
_MAX_STEPS_PER_PATH = 64
_MAX_STEPS = 512
_MAX_VERSION_STRING = 64


@dataclass(frozen=True)
class ApiFunction:
    """A C API function: its slot in struct OrtApi and the API version that added it."""
    name: str
    index: int
    since: int


# The OrtApi entries ortprof probes: their index in `struct OrtApi` of
# include/onnxruntime/core/session/onnxruntime_c_api.h (one slot per
# ORT_API2_STATUS or ORT_CLASS_RELEASE entry, ORT_CLASS_RELEASE(X) declaring
# ReleaseX, counted in declaration order), and the version that appended them
# (onnxruntime_c_api.cc asserts the last index of each version: 101 for
# version 1, 118, 124, 126, 149 for version 5, ... 265 for version 16).
API_FUNCTIONS: Tuple[ApiFunction, ...] = (
    ApiFunction("CreateSession", 7, 1),
    ApiFunction("CreateSessionFromArray", 8, 1),
    ApiFunction("Run", 9, 1),
    ApiFunction("CreateSessionOptions", 10, 1),
    ApiFunction("SetSessionExecutionMode", 13, 1),
    ApiFunction("SetSessionGraphOptimizationLevel", 23, 1),
    ApiFunction("SetIntraOpNumThreads", 24, 1),
    ApiFunction("SetInterOpNumThreads", 25, 1),
    ApiFunction("ReleaseSession", 95, 1),
    ApiFunction("ReleaseSessionOptions", 100, 1),
    ApiFunction("CreateEnvWithGlobalThreadPools", 119, 3),
    ApiFunction("DisablePerSessionThreads", 120, 3),
    ApiFunction("AddSessionConfigEntry", 130, 5),
    ApiFunction("RunWithBinding", 133, 5),
    ApiFunction("RunAsync", 260, 16),
)
API_FUNCTION_BY_NAME = {function.name: function for function in API_FUNCTIONS}


@dataclass(frozen=True)
class OrtApiFunction:
    name: str
    index: int              # slot in the OrtApi table
    since: int              # API version that added it
    address: int            # ELF virtual address (distance from the library's load base)
    file_offset: int        # what `perf probe -x LIB 0xADDR` and uprobe_events take

    def to_json(self):
        return {"name": self.name, "index": self.index, "since": self.since,
                "address": self.address, "file_offset": self.file_offset}


@dataclass
class OrtApiTable:
    path: str
    build_id: Optional[str]
    ort_version: Optional[str]      # GetVersionString's string, when its shape is the usual one
    api_version: int                # the highest version GetApi accepts (ORT_API_VERSION of the build)
    api_base: int                   # address of the OrtApiBase struct
    get_api: int                    # address of GetApi
    table: int                      # address of the OrtApi table GetApi returns for api_version
    functions: Dict[str, OrtApiFunction] = field(default_factory=dict)
    absent: Dict[str, str] = field(default_factory=dict)    # name -> why the library has no such entry

    def function(self, name) -> OrtApiFunction:
        """The entry `name`; InputError naming why when this library has none."""
        found = self.functions.get(name)
        if found is not None:
            return found
        if name not in API_FUNCTION_BY_NAME:
            raise InputError(f"{name} is not one of the C API functions ortprof locates "
                             f"({', '.join(API_FUNCTION_BY_NAME)})")
        raise InputError(f"{self.path}: no {name} ({self.absent[name]})")

    def to_json(self):
        return {"path": self.path, "build_id": self.build_id, "ort_version": self.ort_version,
                "api_version": self.api_version, "api_base": self.api_base, "get_api": self.get_api,
                "table": self.table, "functions": {name: f.to_json() for name, f in self.functions.items()},
                "absent": dict(self.absent)}


class _Image:
    """The loadable contents of an ELF file, addressed by virtual address."""

    def __init__(self, path, elf, data):
        self.path = path
        self.elf = elf
        self.data = data
        self.segments = [(s["p_vaddr"], s["p_offset"], s["p_filesz"], s["p_memsz"], bool(s["p_flags"] & _PF_X))
                         for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        self.relocations = {offset: (kind, symbol, addend)
                            for offset, kind, symbol, addend in _dynamic_relocations(elf)
                            if kind in (_R_X86_64_RELATIVE, _R_X86_64_64)}
        self._symbol_values: Optional[List[Optional[int]]] = None

    def _segment(self, address):
        for vaddr, offset, filesz, memsz, executable in self.segments:
            if vaddr <= address < vaddr + memsz:
                return vaddr, offset, filesz, executable
        return None

    def is_code(self, address):
        segment = self._segment(address)
        return segment is not None and segment[3]

    def file_offset(self, address):
        segment = self._segment(address)
        if segment is None or address >= segment[0] + segment[2]:
            raise InputError(f"{self.path}: address {address:#x} is not backed by the file")
        return address - segment[0] + segment[1]

    def read(self, address, size):
        """Bytes at `address` as loaded (zeros past the file-backed part, as for .bss)."""
        segment = self._segment(address)
        if segment is None:
            raise InputError(f"{self.path}: address {address:#x} is outside its loadable segments")
        vaddr, offset, filesz, _ = segment
        start = address - vaddr
        backed = self.data[offset + start:offset + min(start + size, filesz)] if start < filesz else b""
        return bytes(backed) + b"\0" * (size - len(backed))

    def pointer_at(self, address) -> Optional[int]:
        """The pointer the dynamic loader leaves at `address`; None for a null or imported one."""
        relocation = self.relocations.get(address)
        if relocation is not None:
            kind, symbol, addend = relocation
            if kind == _R_X86_64_RELATIVE:
                return addend or None
            value = self._symbol_value(symbol)
            return None if value is None else value + addend
        value = int.from_bytes(self.read(address, _POINTER), "little")
        return value or None

    def _symbol_value(self, index):
        if self._symbol_values is None:
            dynsym = self.elf.get_section_by_name(".dynsym")
            self._symbol_values = [symbol["st_value"] if symbol["st_shndx"] != "SHN_UNDEF" else None
                                   for symbol in dynsym.iter_symbols()] if dynsym is not None else []
        return self._symbol_values[index] if 0 < index < len(self._symbol_values) else None

    def c_string(self, address, limit=_MAX_VERSION_STRING):
        raw = self.read(address, limit)
        end = raw.find(b"\0")
        return raw[:end].decode("ascii", "replace") if end > 0 else None


# -- what a function returns, from its machine code --------------------------------------
# Upper bound on the left operand of a compare when a condition holds (the other
# conditions bound it from below, which does not matter here), and each condition's negation.
_AT_MOST = {"be": 0, "le": 0, "e": 0, "b": 1, "l": 1}
_NEGATION = {"a": "be", "be": "a", "ae": "b", "b": "ae", "g": "le", "le": "g", "ge": "l", "l": "ge",
             "e": "ne", "ne": "e", "nbe": "be", "nb": "b", "z": "ne", "nz": "e"}
_CALLER_SAVED = ("rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11")
# What a location (a register, or a memory slot "[rbp-4]" an unoptimised build spills to) holds:
# the requested version plus an offset, or a constant.
_VERSION, _CONSTANT = "version", "constant"
Value = Tuple[str, int]

_disassembler = None


def _decoder():
    global _disassembler
    if _disassembler is None:
        import capstone
        _disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        _disassembler.detail = True
    return _disassembler


def _register(name):
    """The 64-bit register a register name is part of (`edx` -> `rdx`, `r8d` -> `r8`)."""
    if len(name) == 3 and name[0] == "e":
        return "r" + name[1:]
    if name[0] == "r" and name[-1] in "dwb" and name[1:-1].isdigit():
        return name[:-1]
    if len(name) == 2 and name[1] in "xl" and name[0] in "abcd":
        return "r" + name[0] + "x"
    if name in ("di", "dil", "si", "sil"):
        return "r" + name[:2]
    return name


@dataclass(frozen=True)
class _Path:
    """One path through a function: what its locations hold, the last compare, the bound it implies."""
    address: int
    holds: Tuple[Tuple[str, Value], ...]
    compare: Optional[Tuple[int, int]] = None       # (version offset of the left operand, immediate)
    at_most: Optional[int] = None                   # the requested version is at most this on this path
    steps: int = 0

    def value(self, location) -> Optional[Value]:
        return dict(self.holds).get(location) if location else None

    def next(self, address, changes=None, compare=None, at_most=None):
        holds = dict(self.holds)
        for location, value in (changes or {}).items():
            if not location.startswith("["):    # a register written: slots addressed through it move
                holds = {held: v for held, v in holds.items() if not held.startswith(f"[{location}")}
            if value is None:
                holds.pop(location, None)
            else:
                holds[location] = value
        return _Path(address, tuple(sorted(holds.items())), compare,
                     self.at_most if at_most is None else at_most, self.steps + 1)

    def bounded(self, condition):
        """at_most once the last compare's `condition` holds."""
        if self.compare is None or condition not in _AT_MOST:
            return self.at_most
        offset, immediate = self.compare
        bound = immediate - offset - _AT_MOST[condition]
        return bound if self.at_most is None else min(bound, self.at_most)


class _Instruction:
    """A decoded instruction's operands as locations and values."""

    def __init__(self, image, decoded):
        from capstone import x86
        self.x86 = x86
        self.image = image
        self.decoded = decoded
        self.mnemonic = decoded.mnemonic
        self.operands = decoded.operands
        self.following = decoded.address + decoded.size

    def register(self, number):
        return _register(self.decoded.reg_name(number))

    def location(self, operand) -> Optional[str]:
        """The register, or stack/memory slot addressed by a register and a displacement, of an operand."""
        if operand.type == self.x86.X86_OP_REG:
            return self.register(operand.reg)
        if operand.type == self.x86.X86_OP_MEM and operand.mem.base and not operand.mem.index \
                and operand.mem.base != self.x86.X86_REG_RIP:
            return f"[{self.register(operand.mem.base)}{operand.mem.disp:+d}]"
        return None

    def rip_target(self, operand) -> Optional[int]:
        if operand.type == self.x86.X86_OP_MEM and operand.mem.base == self.x86.X86_REG_RIP \
                and not operand.mem.index:
            return self.following + operand.mem.disp
        return None

    def branch_target(self) -> Optional[int]:
        if self.operands and self.operands[0].type == self.x86.X86_OP_IMM:
            return self.operands[0].imm
        return None

    def value(self, path, operand) -> Optional[Value]:
        """What reading `operand` gives on `path` (a memory operand: what it holds, not its address)."""
        if operand.type == self.x86.X86_OP_IMM:
            return (_CONSTANT, operand.imm)
        address = self.rip_target(operand)
        if address is not None:
            if operand.size != _POINTER:
                return None
            pointer = self.image.pointer_at(address)
            return None if pointer is None else (_CONSTANT, pointer)
        return path.value(self.location(operand))

    def written(self):
        return [self.register(number) for number in self.decoded.regs_access()[1]]

    def result(self, path) -> Optional[Value]:
        """The value the instruction leaves in its first operand, when it is known."""
        mnemonic, operands = self.mnemonic, self.operands
        destination, source = operands[0], operands[-1]
        if mnemonic == "xor" and len(operands) == 2 and self.location(destination) == self.location(source):
            return (_CONSTANT, 0)
        if mnemonic in ("mov", "movabs") and len(operands) == 2:
            return self.value(path, source)
        if mnemonic == "lea":
            address = self.rip_target(source)
            if address is not None:
                return (_CONSTANT, address)
            base = path.value(self.register(source.mem.base)) if source.mem.base and not source.mem.index else None
            return None if base is None else (base[0], base[1] + source.mem.disp)
        step = {"inc": 1, "dec": -1}.get(mnemonic)
        if step is None and mnemonic in ("add", "sub") and source.type == self.x86.X86_OP_IMM:
            step = source.imm if mnemonic == "add" else -source.imm
        held = path.value(self.location(destination))
        return None if step is None or held is None else (held[0], held[1] + step)


def _returned_values(image, start) -> List[Tuple[int, Optional[int]]]:
    """(value of rax at each `ret` where it is a known constant, bound on the requested version
    on that path) for the function at `start`, whose first argument (rdi) is the version."""
    decoder = _decoder()
    found = []
    pending = [_Path(start, (("rdi", (_VERSION, 0)),))]
    total = 0
    while pending and total < _MAX_STEPS:
        path = pending.pop()
        if path.steps >= _MAX_STEPS_PER_PATH or not image.is_code(path.address):
            continue
        total += 1
        decoded = next(decoder.disasm(image.read(path.address, 16), path.address, 1), None)
        if decoded is None:
            continue
        pending.extend(_successors(_Instruction(image, decoded), path, found))
    return found


def _successors(instruction, path, found) -> List[_Path]:
    """The paths after `instruction`; a `ret` adds what it returns to `found`."""
    mnemonic, operands, following = instruction.mnemonic, instruction.operands, instruction.following
    if mnemonic == "ret":
        rax = path.value("rax")
        if rax is not None and rax[0] == _CONSTANT:
            found.append((rax[1], path.at_most))
        return []
    if mnemonic.startswith("j"):
        target = instruction.branch_target()
        if mnemonic == "jmp":       # through a register or memory (a tail call, a jump table): not followed
            return [] if target is None else [path.next(target, compare=path.compare)]
        condition = mnemonic[1:]
        taken = [] if target is None else [path.next(target, compare=path.compare, at_most=path.bounded(condition))]
        return taken + [path.next(following, compare=path.compare,
                                  at_most=path.bounded(_NEGATION.get(condition, "")))]
    if mnemonic == "call":
        return [path.next(following, dict.fromkeys(_CALLER_SAVED))]
    written = instruction.written()
    changes: Dict[str, Optional[Value]] = dict.fromkeys(written)
    compare = None if "rflags" in written else path.compare
    destination = instruction.location(operands[0]) if operands else None
    if mnemonic == "cmp" and len(operands) == 2 and operands[1].type == instruction.x86.X86_OP_IMM:
        left = path.value(destination)
        compare = (left[1], operands[1].imm) if left is not None and left[0] == _VERSION else None
    elif mnemonic.startswith("cmov") and destination:
        condition = mnemonic[4:]
        moved = {destination: instruction.value(path, operands[1])}
        return [path.next(following, moved, compare, path.bounded(condition)),
                path.next(following, {}, compare, path.bounded(_NEGATION.get(condition, "")))]
    elif destination:
        changes[destination] = instruction.result(path)
    return [path.next(following, changes, compare)]


# -- reading the table ------------------------------------------------------------------
def _open(path):
    try:
        stream = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file")
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})")
    return stream


def read_ort_api(path) -> OrtApiTable:
    """The OrtApi table of the ONNX Runtime library at `path` and the C API functions
    of API_FUNCTIONS in it (those the library has; `absent` says why the others are
    missing). InputError for a file that is not an x86-64 ELF exporting OrtGetApiBase."""
    path = str(path)
    with _open(path) as stream:
        try:
            data = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            raise InputError(f"{path}: empty file, not an ONNX Runtime library")
        try:
            try:
                elf = ELFFile(stream)
            except ELFError as exc:
                raise InputError(f"{path}: not an ELF file ({exc})")
            if elf["e_machine"] != "EM_X86_64" or elf.elfclass != 64 or not elf.little_endian:
                raise InputError(f"{path}: an ELF file for {elf['e_machine']}, not x86-64: "
                                 "ortprof reads the OrtApi table of x86-64 libraries only")
            return _read_table(path, _Image(path, elf, data))
        except (ELFError, IndexError, ValueError) as exc:
            raise InputError(f"{path}: malformed ELF file ({exc})")
        finally:
            data.close()


def _read_table(path, image) -> OrtApiTable:
    dynsym = image.elf.get_section_by_name(".dynsym")
    entry = None
    if dynsym is not None:
        for symbol in dynsym.get_symbol_by_name("OrtGetApiBase") or ():
            if symbol["st_info"]["type"] == "STT_FUNC" and symbol["st_shndx"] != "SHN_UNDEF":
                entry = symbol["st_value"]
    if entry is None:
        raise InputError(f"{path}: exports no OrtGetApiBase, so it is not an ONNX Runtime library "
                         "(libonnxruntime.so); ORT's Python module does not export it either")
    bases = {value for value, _ in _returned_values(image, entry)}
    if len(bases) != 1:
        raise InputError(f"{path}: OrtGetApiBase at {entry:#x} does not return one known OrtApiBase address")
    api_base = bases.pop()
    get_api = image.pointer_at(api_base)
    if get_api is None or not image.is_code(get_api):
        raise InputError(f"{path}: the OrtApiBase at {api_base:#x} holds no GetApi function")
    served = [(table, at_most) for table, at_most in _returned_values(image, get_api)
              if table and at_most is not None and at_most >= 1]
    if not served:
        raise InputError(f"{path}: GetApi at {get_api:#x} has an unexpected shape: "
                         "no path returns a table for a bounded range of versions")
    table, api_version = max(served, key=lambda found: found[1])
    result = OrtApiTable(path, read_elf_info(path).build_id, _version_string(image, api_base),
                         api_version, api_base, get_api, table)
    for function in API_FUNCTIONS:
        if function.since > api_version:
            result.absent[function.name] = (f"added in API version {function.since}, "
                                            f"this library serves up to version {api_version}")
            continue
        address = image.pointer_at(table + function.index * _POINTER)
        if address is None or not image.is_code(address):
            result.absent[function.name] = f"slot {function.index} of its OrtApi table holds no function"
            continue
        result.functions[function.name] = OrtApiFunction(function.name, function.index, function.since,
                                                         address, image.file_offset(address))
    return result


def _version_string(image, api_base) -> Optional[str]:
    """ORT's version, from what GetVersionString (OrtApiBase's second slot) returns."""
    function = image.pointer_at(api_base + _POINTER)
    if function is None or not image.is_code(function):
        return None
    strings = {value for value, _ in _returned_values(image, function)}
    return image.c_string(strings.pop()) if len(strings) == 1 else None
