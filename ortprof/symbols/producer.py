"""Was a binary compiled with optimization? Read from DW_AT_producer of its first compile units.

GCC records its command-line switches in each compile unit's DW_AT_producer by
default (-grecord-gcc-switches), e.g. "GNU C++17 12.2.0 -mtune=generic -march=x86-64 -g -O2".
The last -O switch wins; with switches recorded and no -O at all, GCC compiled at
its default, -O0. A producer without switches (clang's default, GCC with
-gno-record-gcc-switches, an assembler) tells nothing: optimized is None then.

optimized is False for -O0 only. -Og ("optimize for debugging") counts as
optimized: it runs most -O1 passes; `level` says "g" so a report can mention it.

Cheap on a Debug build of several hundred MB: only the headers of the first few
compile units, their abbreviations and the producer strings are read from the
file (a few KiB), never whole debug sections.
"""
import io
import os
from collections import Counter
from dataclasses import dataclass
from typing import Optional

from elftools.common.exceptions import DWARFError, ELFError, ELFParseError
from elftools.common.utils import struct_parse
from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DWARFInfo, DwarfConfig
from elftools.elf.elffile import ELFFile

from ..errors import InputError
from .debugfile import find_debug_file
from .elfinfo import read_elf_info

MAX_UNITS = 8          # compile units examined: enough to outvote a stray assembler or C helper
SHF_COMPRESSED = 0x800
_SECTIONS = ("debug_info", "debug_abbrev", "debug_str", "debug_line_str", "debug_str_offsets", "debug_addr")
UNOPTIMIZED_LEVEL = "0"


@dataclass(frozen=True)
class OptimizationFacts:
    """producer: DW_AT_producer of a compile unit (None without DWARF); optimized: False for
    -O0, True for any other -O level, None when unknown; flags: the switches recorded in the
    producer (None when it records none); level: the effective -O level ("0", "1", "2", "3",
    "s", "z", "g", "fast"), None when unknown; debug_file: where the DWARF was read when it
    came from a separate debug file."""
    producer: Optional[str]
    optimized: Optional[bool]
    flags: Optional[str]
    level: Optional[str] = None
    debug_file: Optional[str] = None


NO_DWARF = OptimizationFacts(None, None, None)


def optimization_level(producer) -> tuple:
    """(flags, level) of a producer string: flags None when it records no switches."""
    tokens = producer.split()
    switches = [t for t in tokens if t.startswith("-")]
    if not switches:
        return None, None
    flags = " ".join(tokens[tokens.index(switches[0]):])
    level = UNOPTIMIZED_LEVEL   # GCC's default when no -O is given
    for switch in switches:
        if switch == "-O":
            level = "1"
        elif switch.startswith("-O"):
            level = switch[2:]
    return flags, level


class _SectionWindow(io.RawIOBase):
    """A section of the file as a seekable stream, read on demand (pyelftools would load it whole)."""

    def __init__(self, stream, offset, size):
        self._stream, self._base, self._size, self._pos = stream, offset, size, 0
        self.bytes_read = 0

    def seekable(self):
        return True

    def readable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def read(self, size=-1):
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        self._stream.seek(self._base + self._pos)
        data = self._stream.read(end - self._pos)
        self._pos += len(data)
        self.bytes_read += len(data)
        return data


def _section_headers(elf) -> dict:
    """name -> (index, header) of every section, from the header table alone: pyelftools'
    get_section_by_name builds every section first, and parses .gnu.hash while at it."""
    names = elf.get_section(elf.get_shstrndx())
    headers = {}
    for index in range(elf.num_sections()):
        header = struct_parse(elf.structs.Elf_Shdr, elf.stream, elf["e_shoff"] + index * elf["e_shentsize"])
        headers[names.get_string(header["sh_name"])] = (index, header)
    return headers


def _descriptor(elf, index, header, stream):
    if header["sh_flags"] & SHF_COMPRESSED or header["sh_type"] == "SHT_NOBITS":
        data = elf.get_section(index).data()   # pyelftools inflates SHF_COMPRESSED sections
        return DebugSectionDescriptor(io.BytesIO(data), "", header["sh_offset"], len(data), header["sh_addr"])
    window = _SectionWindow(stream, header["sh_offset"], header["sh_size"])
    return DebugSectionDescriptor(window, "", header["sh_offset"], header["sh_size"], header["sh_addr"])


def _lazy_dwarf(elf, stream) -> Optional[DWARFInfo]:
    if elf["e_type"] == "ET_REL":
        # Object files need their relocations applied to find the strings: they are small.
        return elf.get_dwarf_info() if elf.has_dwarf_info() else None
    headers = _section_headers(elf)
    sections = {}
    for name in _SECTIONS:
        found = headers.get("." + name)
        sections[name] = _descriptor(elf, *found, stream) if found else None
    if sections["debug_info"] is None or sections["debug_abbrev"] is None:
        return None
    config = DwarfConfig(little_endian=elf.little_endian, default_address_size=elf.elfclass // 8,
                         machine_arch=elf.get_machine_arch())
    return DWARFInfo(config=config,
                     debug_info_sec=sections["debug_info"], debug_abbrev_sec=sections["debug_abbrev"],
                     debug_str_sec=sections["debug_str"], debug_line_str_sec=sections["debug_line_str"],
                     debug_str_offsets_sec=sections["debug_str_offsets"], debug_addr_sec=sections["debug_addr"],
                     debug_aranges_sec=None, debug_frame_sec=None, eh_frame_sec=None, debug_loc_sec=None,
                     debug_ranges_sec=None, debug_line_sec=None, debug_pubtypes_sec=None,
                     debug_pubnames_sec=None, debug_loclists_sec=None, debug_rnglists_sec=None,
                     debug_sup_sec=None, gnu_debugaltlink_sec=None, debug_types_sec=None)


def _producers(path, max_units=MAX_UNITS) -> list:
    """DW_AT_producer of the first compile units of `path` ([] without DWARF)."""
    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            dwarf = _lazy_dwarf(elf, stream)
            if dwarf is None:
                return []
            producers = []
            for number, unit in enumerate(dwarf.iter_CUs()):
                if number >= max_units:
                    break
                attribute = unit.get_top_DIE().attributes.get("DW_AT_producer")
                if attribute is not None:
                    value = attribute.value
                    producers.append(value.decode(errors="replace") if isinstance(value, bytes) else str(value))
            return producers
    except FileNotFoundError:
        raise InputError(f"{path}: no such file")
    except (ELFError, ELFParseError, DWARFError, OSError) as error:
        raise InputError(f"{path}: cannot read its debug information ({error})")


def facts_from_producers(producers) -> OptimizationFacts:
    """The most common -O level among compile units that record their switches (the first such
    unit breaks ties); unknown when none records them."""
    if not producers:
        return NO_DWARF
    recorded = [(producer, *optimization_level(producer)) for producer in producers]
    recorded = [item for item in recorded if item[1] is not None]
    if not recorded:
        return OptimizationFacts(producers[0], None, None)
    level = Counter(level for _, _, level in recorded).most_common(1)[0][0]   # ties: first seen
    producer, flags, _ = next(item for item in recorded if item[2] == level)
    return OptimizationFacts(producer, level != UNOPTIMIZED_LEVEL, flags, level)


def optimization_of(path, debug_roots=None) -> OptimizationFacts:
    """How the ELF at `path` was compiled, from its DWARF or its separate debug file's.

    All None when neither has DWARF (e.g. the stripped PyPI wheel of ORT).
    Raises InputError when `path` is missing or not an ELF file.
    """
    producers = _producers(path)
    if producers:
        return facts_from_producers(producers)
    info = read_elf_info(path)
    debug_file = find_debug_file(path, info, **({"roots": debug_roots} if debug_roots is not None else {}))
    if debug_file is None or os.path.realpath(debug_file) == os.path.realpath(path):
        return NO_DWARF
    facts = facts_from_producers(_producers(debug_file))
    return OptimizationFacts(facts.producer, facts.optimized, facts.flags, facts.level, debug_file)
