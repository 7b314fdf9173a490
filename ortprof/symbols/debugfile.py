"""Find the separate debug file of a stripped binary: by build-id, then by .gnu_debuglink.

Same search order as gdb and perf: `<root>/.build-id/ab/cdef....debug`, then
the debuglink name next to the binary, in its `.debug/` directory, and under
`<root>/<binary's directory>/`. A candidate must match: same build-id when both
have one, else the CRC32 that .gnu_debuglink records.
"""
import os
import struct
import zlib
from typing import Iterable, Optional

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import InputError
from .elfinfo import STRIPPED, read_elf_info

DEFAULT_ROOTS = ("/usr/lib/debug",)


def build_id_path(root, build_id) -> str:
    return os.path.join(root, ".build-id", build_id[:2], build_id[2:] + ".debug")


def _debuglink_crc(path) -> Optional[int]:
    """The CRC32 stored after the file name in .gnu_debuglink (4-byte aligned)."""
    try:
        with open(path, "rb") as stream:
            section = ELFFile(stream).get_section_by_name(".gnu_debuglink")
            if section is None:
                return None
            raw = section.data()
    except (OSError, ELFError):
        return None
    name_end = raw.index(b"\0") + 1
    crc_at = (name_end + 3) & ~3
    if len(raw) < crc_at + 4:
        return None
    return struct.unpack_from("<I", raw, crc_at)[0]


def _file_crc32(path) -> int:
    crc = 0
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            crc = zlib.crc32(chunk, crc)
    return crc & 0xFFFFFFFF


def _matches(candidate, build_id, crc) -> bool:
    try:
        info = read_elf_info(candidate)
    except InputError:
        return False
    if info.symbol_status == STRIPPED:
        return False
    if build_id and info.build_id:
        return info.build_id == build_id
    return crc is not None and _file_crc32(candidate) == crc


def find_debug_file(path, info=None, roots: Iterable[str] = DEFAULT_ROOTS) -> Optional[str]:
    """Path of a debug file with symbols for the binary at `path`, or None."""
    info = info or read_elf_info(path)
    roots = list(roots)
    if info.build_id:
        for root in roots:
            candidate = build_id_path(root, info.build_id)
            if os.path.isfile(candidate) and _matches(candidate, info.build_id, None):
                return candidate
    if info.debuglink:
        directory = os.path.dirname(os.path.realpath(path))
        candidates = [os.path.join(directory, info.debuglink),
                      os.path.join(directory, ".debug", info.debuglink)]
        candidates += [os.path.join(root, directory.lstrip("/"), info.debuglink) for root in roots]
        crc = _debuglink_crc(path)
        for candidate in candidates:
            if os.path.isfile(candidate) and os.path.realpath(candidate) != os.path.realpath(path) \
                    and _matches(candidate, info.build_id, crc):
                return candidate
    return None
