"""What an ELF file carries for symbolization: build-id and symbol status."""
import functools
import os
from dataclasses import dataclass
from typing import Optional

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import InputError

# Symbol status, from poorest to richest.
STRIPPED = "stripped"   # no .symtab and no DWARF: names come from .eh_frame only
SYMTAB = "symtab"       # function names, no line tables
DWARF = "dwarf"         # names and file:line

# What reading a binary raises when it is gone, unreadable or not ELF: bad input, not a bug.
# ortprof.symbols wraps most of it in InputError; pyelftools and the OS may still raise their own.
READ_ERRORS = (InputError, OSError, ELFError)


@dataclass
class ElfInfo:
    path: str
    build_id: Optional[str]
    symbol_status: str
    debuglink: Optional[str]
    has_eh_frame: bool

    def to_json(self):
        return dict(self.__dict__)


def read_elf_info(path):
    """Read build-id, symbol status and debuglink of `path` (headers only, a few ms with pyelftools;
    remembered per file version: a report, and the agent every window, ask for the same binaries
    several times)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file")
    except OSError:
        return _read_elf_info(path)
    return _read_elf_info_of_version(str(path), (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=256)
def _read_elf_info_of_version(path, _version):
    return _read_elf_info(path)


def _read_elf_info(path):
    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            names = {section.name for section in elf.iter_sections()}
            build_id = None
            for section in elf.iter_sections():
                if section.header.sh_type != "SHT_NOTE":
                    continue
                for note in section.iter_notes():
                    # n_type 3 is also a stapsdt probe note (libstdc++): only the GNU note is the build-id
                    if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                        build_id = note["n_desc"]
            debuglink = None
            if ".gnu_debuglink" in names:
                raw = elf.get_section_by_name(".gnu_debuglink").data()
                debuglink = raw.split(b"\0", 1)[0].decode(errors="replace")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file")
    except (ELFError, OSError) as exc:
        raise InputError(f"{path}: not a readable ELF file ({exc})")
    if ".debug_info" in names or ".zdebug_info" in names:
        status = DWARF
    elif ".symtab" in names:
        status = SYMTAB
    else:
        status = STRIPPED
    return ElfInfo(path, build_id, status, debuglink, ".eh_frame" in names)
