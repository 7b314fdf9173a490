"""file:line for a handful of addresses, from DWARF line tables.

A Debug ORT module is ~500 MB of DWARF; perf itself needs minutes to resolve
inlined frames through it. Here only the compile units that hold the asked
addresses are touched: `.debug_aranges` maps an address to its CU, and only
that CU's line program is decoded. Sections are read lazily through mmap
instead of being copied into memory as pyelftools does by default.
"""
import bisect
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from elftools.common.exceptions import DWARFError, ELFError
from elftools.dwarf.dwarfinfo import DebugSectionDescriptor
from elftools.dwarf.ranges import BaseAddressEntry, RangeEntry
from elftools.elf.elffile import ELFFile

from ..errors import InputError

_SHF_COMPRESSED = 0x800


@dataclass(frozen=True)
class SourceLine:
    file: str
    line: int
    column: int = 0

    def __str__(self):
        return f"{self.file}:{self.line}"


class _SectionStream:
    """A seekable, read-only view of one section of an mmapped file."""

    def __init__(self, mapped, offset, size):
        self._map, self._base, self._size, self._pos = mapped, offset, size, 0

    def seek(self, pos, whence=os.SEEK_SET):
        if whence == os.SEEK_CUR:
            pos += self._pos
        elif whence == os.SEEK_END:
            pos += self._size
        self._pos = pos
        return pos

    def tell(self):
        return self._pos

    def read(self, size=-1):
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        begin = self._pos
        self._pos = max(end, begin)
        return self._map[self._base + begin:self._base + end]


class _LazyDwarfELF(ELFFile):
    """ELFFile whose DWARF sections are mmap views instead of in-memory copies."""

    def __init__(self, stream, mapped):
        super().__init__(stream)
        self._mapped = mapped

    def _read_dwarf_section(self, section, relocate_dwarf_sections):
        compressed = section["sh_flags"] & _SHF_COMPRESSED or section.name.startswith(".z")
        if compressed or self["e_type"] == "ET_REL" or section.header.sh_type == "SHT_NOBITS":
            return super()._read_dwarf_section(section, relocate_dwarf_sections)
        return DebugSectionDescriptor(
            stream=_SectionStream(self._mapped, section["sh_offset"], section["sh_size"]),
            name=section.name, global_offset=section["sh_offset"],
            size=section["sh_size"], address=section["sh_addr"])


class LineTable:
    """Source lines of one ELF file with DWARF (the binary or its separate debug file)."""

    def __init__(self, path):
        self.path = str(path)
        try:
            self._file = open(self.path, "rb")
        except OSError as exc:
            raise InputError(f"{self.path}: cannot open ({exc.strerror})")
        try:
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self._elf = _LazyDwarfELF(self._file, self._map)
            if not self._elf.has_dwarf_info():
                raise InputError(f"{self.path}: no DWARF debug information")
            self._dwarf = self._elf.get_dwarf_info(follow_links=False)
        except (ELFError, DWARFError, ValueError) as exc:
            self.close()
            raise InputError(f"{self.path}: unreadable DWARF ({exc})")
        except InputError:
            self.close()
            raise
        self._aranges = None
        self._cu_ranges = None          # fallback when .debug_aranges lacks an address
        self._rows_by_cu: Dict[int, Tuple[List[int], list]] = {}

    def close(self):
        if getattr(self, "_map", None) is not None:
            self._elf = self._dwarf = None
            try:
                self._map.close()
            except BufferError:
                pass    # a view still alive; released with the object
            self._map = None
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _cu_offset(self, addr) -> Optional[int]:
        if self._aranges is None:
            self._aranges = self._read_aranges()
        starts, spans = self._aranges
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and addr < spans[i][1]:
            return spans[i][2]
        return self._cu_offset_from_dies(addr)

    def _read_aranges(self):
        """.debug_aranges as (sorted starts, [(start, end, CU offset)]).

        Parsed with struct: a Debug ORT lists hundreds of thousands of ranges,
        too many for pyelftools' per-entry parser."""
        section = self._elf.get_section_by_name(".debug_aranges")
        if section is None or section.header.sh_type == "SHT_NOBITS" or section["sh_flags"] & _SHF_COMPRESSED:
            return [], []
        data = self._map[section["sh_offset"]:section["sh_offset"] + section["sh_size"]]
        order = "<" if self._elf.little_endian else ">"
        spans = []
        offset = 0
        while offset + 4 <= len(data):
            length, = struct.unpack_from(order + "I", data, offset)
            header = offset + 4
            offset_size = 4
            if length == 0xFFFFFFFF:
                length, = struct.unpack_from(order + "Q", data, header)
                header += 8
                offset_size = 8
            end = header + length
            cu_offset, = struct.unpack_from(order + ("I" if offset_size == 4 else "Q"), data, header + 2)
            address_size = data[header + 2 + offset_size]
            tuple_size = 2 * address_size
            # Tuples start at the first multiple of their size from the set's start.
            first = header + 2 + offset_size + 2
            first = offset + -(-(first - offset) // tuple_size) * tuple_size
            code = order + ("II" if address_size == 4 else "QQ")
            for start, size in struct.iter_unpack(code, data[first:end - (end - first) % tuple_size]):
                if size:
                    spans.append((start, start + size, cu_offset))
            offset = end
        spans.sort()
        return [span[0] for span in spans], spans

    def _cu_offset_from_dies(self, addr) -> Optional[int]:
        """Scan each CU's top DIE for its address ranges (clang omits .debug_aranges)."""
        if self._cu_ranges is None:
            spans = []
            range_lists = self._dwarf.range_lists()
            for cu in self._dwarf.iter_CUs():
                top = cu.get_top_DIE()
                attrs = top.attributes
                if "DW_AT_low_pc" in attrs and "DW_AT_high_pc" in attrs:
                    low = attrs["DW_AT_low_pc"].value
                    high = attrs["DW_AT_high_pc"]
                    end = high.value if high.form == "DW_FORM_addr" else low + high.value
                    spans.append((low, end, cu.cu_offset))
                elif "DW_AT_ranges" in attrs and range_lists is not None:
                    base = attrs["DW_AT_low_pc"].value if "DW_AT_low_pc" in attrs else 0
                    for entry in range_lists.get_range_list_at_offset(attrs["DW_AT_ranges"].value, cu=cu):
                        if isinstance(entry, BaseAddressEntry):
                            base = entry.base_address
                        elif isinstance(entry, RangeEntry):
                            shift = 0 if entry.is_absolute else base
                            spans.append((entry.begin_offset + shift, entry.end_offset + shift, cu.cu_offset))
            spans.sort()
            self._cu_ranges = spans
        starts = [span[0] for span in self._cu_ranges]
        i = bisect.bisect_right(starts, addr) - 1
        while i >= 0:
            begin, end, offset = self._cu_ranges[i]
            if begin <= addr < end:
                return offset
            i -= 1
            if addr - begin > 1 << 24:
                break
        return None

    def _rows(self, cu_offset):
        """(sorted row addresses, rows) of one CU: rows are (addr, file, line, column, end_sequence)."""
        cached = self._rows_by_cu.get(cu_offset)
        if cached is not None:
            return cached
        cu = self._dwarf.get_CU_at(cu_offset)
        program = self._dwarf.line_program_for_CU(cu)
        rows = []
        if program is not None:
            names = self._file_names(program, cu)
            for entry in program.get_entries():
                state = entry.state
                if state is None:
                    continue
                rows.append((state.address, names.get(state.file, "??"), state.line,
                             state.column, state.end_sequence))
        # Sort by address, end_sequence rows first at equal addresses so that
        # a sequence starting where another ended wins.
        rows.sort(key=lambda row: (row[0], not row[4]))
        cached = ([row[0] for row in rows], rows)
        self._rows_by_cu[cu_offset] = cached
        return cached

    @staticmethod
    def _file_names(program, cu) -> Dict[int, str]:
        header = program.header
        version = header["version"]
        directories = [d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d)
                       for d in header["include_directory"]]
        comp_dir = ""
        top = cu.get_top_DIE()
        if "DW_AT_comp_dir" in top.attributes:
            raw = top.attributes["DW_AT_comp_dir"].value
            comp_dir = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        names = {}
        # DWARF 5 numbers files and directories from 0, earlier versions from 1
        # with directory 0 meaning the compilation directory.
        first = 0 if version >= 5 else 1
        for number, entry in enumerate(header["file_entry"], start=first):
            name = entry.name.decode("utf-8", "replace") if isinstance(entry.name, bytes) else str(entry.name)
            if version >= 5:
                directory = directories[entry.dir_index] if entry.dir_index < len(directories) else ""
            else:
                directory = directories[entry.dir_index - 1] if 0 < entry.dir_index <= len(directories) else comp_dir
            if directory and not os.path.isabs(directory) and comp_dir:
                directory = os.path.join(comp_dir, directory)
            names[number] = os.path.normpath(os.path.join(directory, name)) if directory else name
        return names

    def lookup(self, addr) -> Optional[SourceLine]:
        """The source line of the instruction at `addr` (a virtual address of the binary)."""
        cu_offset = self._cu_offset(addr)
        if cu_offset is None:
            return None
        addresses, rows = self._rows(cu_offset)
        i = bisect.bisect_right(addresses, addr) - 1
        if i < 0 or rows[i][4] or i + 1 >= len(rows):
            return None  # before the first row, or in a gap after an end_sequence
        _, name, line, column, _ = rows[i]
        return SourceLine(name, line, column or 0)

    def lookup_many(self, addrs: Iterable[int]) -> Dict[int, Optional[SourceLine]]:
        return {addr: self.lookup(addr) for addr in addrs}
