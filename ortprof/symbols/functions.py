"""Function boundaries of an ELF file: `.eh_frame` FDEs, and names from `.symtab`/`.dynsym`.

The stock ONNX Runtime wheel is stripped, but it must keep `.eh_frame` for C++
exceptions, and every FDE there covers one function (or one cold/hot part of
one). That gives function starts and sizes for ~41,000 functions; names are then
synthetic (`ort!fn_10e51e0`). Where a symbol table exists its names win.

pyelftools' CFI parser decodes every call-frame instruction too and needs ~3 s
for the 22,000 FDEs of ORT 1.15.1 (~6 s for 1.31.1), so the FDE headers are
read here directly: `.eh_frame_hdr`'s sorted search table lists every FDE, and
each FDE's header gives its pc_begin and pc_range (~0.1 s for 41,000).
"""
import bisect
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

# DW_EH_PE pointer encodings (low nibble: format, bits 4-6: what it is relative to).
_PE_OMIT = 0xFF
_PE_FORMAT_MASK = 0x0F
_PE_APPLICATION_MASK = 0x70
_PE_INDIRECT = 0x80
_PE_PCREL = 0x10
_PE_DATAREL = 0x30
_PE_FIXED_FORMATS = {0x02: "<H", 0x03: "<I", 0x04: "<Q", 0x0A: "<h", 0x0B: "<i", 0x0C: "<q"}
_PE_ULEB128 = 0x01
_PE_SLEB128 = 0x09
_PE_ABSPTR = 0x00
# The encoding of .eh_frame_hdr's table in every GNU toolchain output: datarel, sdata4.
_TABLE_DATAREL_SDATA4 = _PE_DATAREL | 0x0B

_STT_FUNC = 2
_STT_GNU_IFUNC = 10
_SHN_UNDEF = 0
_STB_LOCAL = 0


class EhFrameError(ValueError):
    """`.eh_frame` or `.eh_frame_hdr` is malformed or uses an unsupported encoding."""


def _read_leb128(data, offset, signed=False):
    """(value, next offset) of a (U|S)LEB128 number in DWARF/.eh_frame data."""
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if signed and byte & 0x40:
                value -= 1 << shift
            return value, offset


def _read_encoded(data, offset, encoding, field_vaddr, datarel_base=0, apply=True):
    """Decode one DW_EH_PE-encoded pointer at data[offset]; return (value, next offset).

    `field_vaddr` is the virtual address of the field itself (for pcrel).
    With apply=False the relative base is not added (FDE pc_range uses the
    format of the pc_begin encoding but is a plain length)."""
    fmt = encoding & _PE_FORMAT_MASK
    if fmt == _PE_ABSPTR:
        value, = struct.unpack_from("<Q", data, offset)
        offset += 8
    elif fmt == _PE_ULEB128:
        value, offset = _read_leb128(data, offset)
    elif fmt == _PE_SLEB128:
        value, offset = _read_leb128(data, offset, signed=True)
    elif fmt in _PE_FIXED_FORMATS:
        code = _PE_FIXED_FORMATS[fmt]
        value, = struct.unpack_from(code, data, offset)
        offset += struct.calcsize(code)
    else:
        raise EhFrameError(f"unsupported pointer encoding {encoding:#x}")
    if not apply:
        return value, offset
    if encoding & _PE_INDIRECT:
        raise EhFrameError("indirect pointer encodings are not supported")
    application = encoding & _PE_APPLICATION_MASK
    if application == _PE_PCREL:
        value += field_vaddr
    elif application == _PE_DATAREL:
        value += datarel_base
    elif application != 0:
        raise EhFrameError(f"unsupported pointer application {encoding:#x}")
    return value & 0xFFFFFFFFFFFFFFFF, offset


class _EhFrame:
    """`.eh_frame` bytes plus what is needed to decode FDE headers."""

    def __init__(self, data, vaddr):
        self.data = data
        self.vaddr = vaddr
        self._fde_encoding_by_cie = {}

    def _record_header(self, offset):
        """(length of the record body, offset of the body's first byte)."""
        length, = struct.unpack_from("<I", self.data, offset)
        if length == 0xFFFFFFFF:
            length, = struct.unpack_from("<Q", self.data, offset + 4)
            return length, offset + 12
        return length, offset + 4

    def _fde_encoding(self, cie_offset):
        """The 'R' (FDE pointer) encoding from a CIE's augmentation (pcrel|sdata4 typically)."""
        cached = self._fde_encoding_by_cie.get(cie_offset)
        if cached is not None:
            return cached
        data = self.data
        _, body = self._record_header(cie_offset)
        pos = body + 4  # CIE id
        version = data[pos]
        pos += 1
        end = data.index(b"\0", pos)
        augmentation = bytes(data[pos:end]).decode("ascii", "replace")
        pos = end + 1
        if "eh" in augmentation:
            pos += 8
        _, pos = _read_leb128(data, pos)   # code alignment
        _, pos = _read_leb128(data, pos, signed=True)   # data alignment
        if version == 1:
            pos += 1                        # return address register
        else:
            _, pos = _read_leb128(data, pos)
        encoding = _PE_ABSPTR
        if augmentation.startswith("z"):
            _, pos = _read_leb128(data, pos)
            for letter in augmentation[1:]:
                if letter == "R":
                    encoding = data[pos]
                    break
                if letter == "L":
                    pos += 1
                elif letter == "P":
                    personality_encoding = data[pos]
                    _, pos = _read_encoded(data, pos + 1, personality_encoding,
                                           self.vaddr + pos + 1, apply=False)
                elif letter in "SB":
                    continue
                else:
                    break  # unknown augmentation: its data size is unknown, keep absptr
        self._fde_encoding_by_cie[cie_offset] = encoding
        return encoding

    def fde_range(self, offset):
        """(pc_begin, pc_range) of the FDE at `offset`, or None if it is a CIE/terminator."""
        length, body = self._record_header(offset)
        if length == 0:
            return None
        cie_pointer, = struct.unpack_from("<I", self.data, body)
        if cie_pointer == 0:
            return None
        encoding = self._fde_encoding(body - cie_pointer)
        pos = body + 4
        start, pos = _read_encoded(self.data, pos, encoding, self.vaddr + pos)
        size, _ = _read_encoded(self.data, pos, encoding & _PE_FORMAT_MASK, 0, apply=False)
        return start, size

    def iter_record_offsets(self):
        """Offsets of all records, walking the section linearly."""
        offset, end = 0, len(self.data)
        while offset + 4 <= end:
            length, body = self._record_header(offset)
            if length == 0:
                break
            yield offset
            offset = body + length


def _hdr_fde_offsets(hdr, hdr_vaddr, eh_vaddr):
    """FDE offsets into .eh_frame from .eh_frame_hdr's sorted search table."""
    version, ptr_enc, count_enc, table_enc = hdr[0], hdr[1], hdr[2], hdr[3]
    if version != 1 or count_enc == _PE_OMIT or table_enc == _PE_OMIT:
        raise EhFrameError(".eh_frame_hdr has no search table")
    pos = 4
    _, pos = _read_encoded(hdr, pos, ptr_enc, hdr_vaddr + pos, hdr_vaddr)
    count, pos = _read_encoded(hdr, pos, count_enc, hdr_vaddr + pos, hdr_vaddr)
    if table_enc == _TABLE_DATAREL_SDATA4:
        # The common case, decoded in bulk: pairs of int32 relative to the header.
        flat = struct.unpack_from(f"<{2 * count}i", hdr, pos)
        base = hdr_vaddr - eh_vaddr
        return [base + rel for rel in flat[1::2]]
    offsets = []
    for _ in range(count):
        _, pos = _read_encoded(hdr, pos, table_enc, hdr_vaddr + pos, hdr_vaddr)
        fde, pos = _read_encoded(hdr, pos, table_enc, hdr_vaddr + pos, hdr_vaddr)
        offsets.append(fde - eh_vaddr)
    return offsets


def read_fde_ranges(elf) -> List[Tuple[int, int]]:
    """Sorted, de-duplicated (start, size) of every FDE of an open pyelftools ELFFile.

    Uses .eh_frame_hdr's table when there is one, else walks .eh_frame. A
    separate debug file has .eh_frame as NOBITS: it gives nothing."""
    eh_section = elf.get_section_by_name(".eh_frame")
    if eh_section is None or eh_section.header.sh_type == "SHT_NOBITS":
        return []
    eh = _EhFrame(eh_section.data(), eh_section["sh_addr"])
    hdr_section = elf.get_section_by_name(".eh_frame_hdr")
    offsets = None
    if hdr_section is not None and hdr_section.header.sh_type != "SHT_NOBITS":
        try:
            offsets = _hdr_fde_offsets(hdr_section.data(), hdr_section["sh_addr"], eh.vaddr)
        except (EhFrameError, struct.error, IndexError):
            offsets = None
    if offsets is None:
        offsets = eh.iter_record_offsets()
    ranges = set()
    for offset in offsets:
        try:
            found = eh.fde_range(offset)
        except (EhFrameError, struct.error, IndexError, ValueError):
            continue
        if found is not None and found[1] > 0:
            ranges.add(found)
    return sorted(ranges)


def _symbol_tables(elf):
    for name in (".symtab", ".dynsym"):
        section = elf.get_section_by_name(name)
        if section is not None and section.header.sh_type != "SHT_NOBITS":
            yield section


def _iter_symbols(elf, section):
    """(name, info, shndx, value, size) of every entry of a symbol table section.

    Parsed with struct rather than pyelftools' per-symbol objects: a Debug ORT
    has hundreds of thousands of symbols."""
    if elf.elfclass == 64:
        layout, order = "IBBHQQ", (0, 1, 3, 4, 5)
    else:
        layout, order = "IIIBBH", (0, 3, 5, 1, 2)
    layout = ("<" if elf.little_endian else ">") + layout
    strings = elf.get_section(section["sh_link"]).data()
    for entry in struct.iter_unpack(layout, section.data()):
        name_offset = entry[order[0]]
        name = strings[name_offset:strings.index(b"\0", name_offset)].decode("utf-8", "replace")
        yield (name.split("@", 1)[0],) + tuple(entry[i] for i in order[1:])


def read_function_symbols(elf) -> List[Tuple[int, int, str, bool]]:
    """(start, size, mangled name, is_global) of defined function symbols in .symtab and .dynsym."""
    found = []
    for section in _symbol_tables(elf):
        for name, info, shndx, value, size in _iter_symbols(elf, section):
            if (info & 0xF) in (_STT_FUNC, _STT_GNU_IFUNC) and shndx != _SHN_UNDEF and value:
                found.append((value, size, name, (info >> 4) != _STB_LOCAL))
    return found


# x86-64 relocation types: GLOB_DAT/JUMP_SLOT bind a GOT slot to an imported
# symbol; RELATIVE stores a load-address-relative pointer (function pointers
# in dispatch tables among them).
_R_X86_64_GLOB_DAT = 6
_R_X86_64_JUMP_SLOT = 7
_R_X86_64_RELATIVE = 8
_SHF_EXECINSTR = 0x4
# Gaps between FDEs shorter than this are alignment padding.
_MIN_GAP = 64
_FUNCTION_ALIGNMENT = 16


def _dynamic_relocations(elf):
    """(offset, type, symbol index, addend) of the SHT_RELA sections of an x86-64 ELF."""
    if elf.elfclass != 64 or not elf.little_endian or elf["e_machine"] != "EM_X86_64":
        return
    for section in elf.iter_sections():
        if section.header.sh_type == "SHT_RELA" and section.header.sh_flags & 0x2:  # SHF_ALLOC
            for offset, info, addend in struct.iter_unpack("<QQq", section.data()):
                yield offset, info & 0xFFFFFFFF, info >> 32, addend


def read_import_slots(elf) -> Dict[int, str]:
    """GOT slot address -> imported symbol name (from .rela.plt/.rela.dyn of an x86-64 ELF)."""
    if elf.elfclass != 64 or not elf.little_endian:
        return {}
    slots = {}
    dynsym = elf.get_section_by_name(".dynsym")
    if dynsym is None:
        return slots
    names = [entry[0] for entry in _iter_symbols(elf, dynsym)]
    for offset, kind, symbol, _ in _dynamic_relocations(elf):
        if kind in (_R_X86_64_GLOB_DAT, _R_X86_64_JUMP_SLOT) and 0 < symbol < len(names):
            slots[offset] = names[symbol]
    return slots


def read_gap_functions(elf, fde_ranges) -> List[Tuple[int, int]]:
    """(start, size) of functions in executable code that no FDE covers.

    Hand-written assembly (MLAS's GEMM kernels: ~240 KB in ORT 1.31.1) has no
    CFI. Its functions are reached through dispatch tables of function
    pointers, i.e. RELATIVE relocations whose aligned addends point into the
    gap; those split the gap into functions. Without them a gap is one function."""
    code_spans = [(s["sh_addr"], s["sh_addr"] + s["sh_size"]) for s in elf.iter_sections()
                  if s["sh_flags"] & _SHF_EXECINSTR and s.header.sh_type != "SHT_NOBITS"]
    gaps = []
    for begin, end in code_spans:
        i = bisect.bisect_left(fde_ranges, (begin, 0))
        cursor = begin
        while i < len(fde_ranges) and fde_ranges[i][0] < end:
            start, size = fde_ranges[i]
            if start - cursor >= _MIN_GAP:
                gaps.append((cursor, start))
            cursor = max(cursor, start + size)
            i += 1
        if end - cursor >= _MIN_GAP:
            gaps.append((cursor, end))
    if not gaps:
        return []
    gap_begins = [g[0] for g in gaps]
    starts = {g: set() for g in gaps}
    for _, kind, _, addend in _dynamic_relocations(elf):
        if kind != _R_X86_64_RELATIVE or addend % _FUNCTION_ALIGNMENT:
            continue
        i = bisect.bisect_right(gap_begins, addend) - 1
        if i >= 0 and addend < gaps[i][1]:
            starts[gaps[i]].add(addend)
    found = []
    for begin, end in gaps:
        first = -(-begin // _FUNCTION_ALIGNMENT) * _FUNCTION_ALIGNMENT   # padding before it
        points = sorted(starts[(begin, end)] | {first})
        for start, next_start in zip(points, points[1:] + [end]):
            found.append((start, next_start - start))
    return found


def demangle(names: Sequence[str]) -> List[str]:
    """Demangle C++ names with one `c++filt` process; unchanged when c++filt is absent."""
    tool = shutil.which("c++filt")
    wanted = [i for i, name in enumerate(names) if name.startswith("_Z")]
    if tool is None or not wanted:
        return list(names)
    text = "\n".join(names[i] for i in wanted) + "\n"
    try:
        done = subprocess.run([tool], input=text, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return list(names)
    lines = done.stdout.split("\n")
    result = list(names)
    if done.returncode == 0 and len(lines) >= len(wanted):
        for i, readable in zip(wanted, lines):
            result[i] = readable
    return result


def dso_prefix(path) -> str:
    """Short module name used in synthetic names: `ort` for ORT's modules, else the file's stem."""
    base = os.path.basename(str(path))
    if "onnxruntime" in base:
        return "ort"
    return base.split(".", 1)[0] or base


@dataclass(frozen=True)
class Function:
    start: int
    size: int
    name: str
    named: bool     # a real symbol name, not a synthetic one

    @property
    def end(self):
        return self.start + self.size


class FunctionIndex:
    """Sorted function ranges with O(log n) lookup of the function containing an address."""

    # How many earlier ranges to try when the nearest start does not cover the
    # address (symbols may nest or overlap, e.g. an alias spanning two FDEs).
    _OVERLAP_PROBE = 4

    def __init__(self, starts, sizes, names, prefix="ort"):
        self.starts = list(starts)
        self.sizes = list(sizes)
        self.names = list(names)    # None where only the FDE is known
        self.prefix = prefix

    def __len__(self):
        return len(self.starts)

    def position(self, addr) -> Optional[int]:
        """Index of the function containing `addr`, or None."""
        i = bisect.bisect_right(self.starts, addr) - 1
        for j in range(i, max(i - self._OVERLAP_PROBE, -1), -1):
            if addr < self.starts[j] + self.sizes[j]:
                return j
        return None

    def function_at(self, addr) -> Optional[Function]:
        i = self.position(addr)
        if i is None:
            return None
        return self._function(i)

    def _function(self, i):
        real = self.names[i]
        start = self.starts[i]
        return Function(start, self.sizes[i], self.name(start), real is not None)

    def __iter__(self):
        return (self._function(i) for i in range(len(self.starts)))

    def start_of(self, addr) -> Optional[int]:
        i = self.position(addr)
        return self.starts[i] if i is not None else None

    def name(self, addr) -> str:
        """Real or synthetic name of the function at `addr`; `<prefix>!<addr>` outside any."""
        i = self.position(addr)
        if i is None:
            return f"{self.prefix}!{addr:#x}"
        real = self.names[i]
        return real if real is not None else f"{self.prefix}!fn_{self.starts[i]:x}"

    def named_count(self):
        return sum(1 for name in self.names if name is not None)

    def to_json(self):
        return {"prefix": self.prefix, "starts": self.starts, "sizes": self.sizes, "names": self.names}

    @classmethod
    def from_json(cls, data):
        return cls(data["starts"], data["sizes"], data["names"], data["prefix"])


def build_function_index(code_elf, symbol_elf=None, prefix="ort", demangle_names=True) -> FunctionIndex:
    """Merge FDE ranges of `code_elf` with function symbols of `symbol_elf` (default: the same file).

    `symbol_elf` is a separate debug file when one was found: it has the symbol
    table, while its .eh_frame is NOBITS."""
    fde_ranges = read_fde_ranges(code_elf)
    by_start = {start: [size, None, False] for start, size in fde_ranges}
    for start, size in read_gap_functions(code_elf, fde_ranges):
        by_start.setdefault(start, [size, None, False])
    symbol_sources = [code_elf] if symbol_elf is None else [code_elf, symbol_elf]
    for elf in symbol_sources:
        for start, size, name, is_global in read_function_symbols(elf):
            entry = by_start.get(start)
            if entry is None:
                if size == 0:
                    continue    # a bare label with no extent and no FDE
                by_start[start] = [size, name, is_global]
            elif entry[1] is None or (is_global and not entry[2]):
                # Prefer a global name over a local alias of the same address.
                entry[1], entry[2] = name, is_global
                if size:
                    entry[0] = size
    starts = sorted(by_start)
    sizes = [by_start[s][0] for s in starts]
    names = [by_start[s][1] for s in starts]
    if demangle_names:
        present = [i for i, name in enumerate(names) if name is not None]
        readable = demangle([names[i] for i in present])
        for i, name in zip(present, readable):
            names[i] = name
    return FunctionIndex(starts, sizes, names, prefix)
