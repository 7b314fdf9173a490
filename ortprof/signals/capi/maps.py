"""What a process maps, and where ortprof finds the same file: /proc/PID/maps parsed, and a mapped
file's path in ortprof's mount namespace. Uprobes go on a file (perf probe -x PATH): for a process
in another mount namespace (a container) its path may name another file here, or none, so the
file is reached through /proc/PID/root and checked to be the one mapped (device and inode)."""
import os
import re
import stat
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ...errors import EnvironmentProblem, InputError

DELETED = " (deleted)"


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    offset: int
    device: Tuple[int, int]       # (major, minor)
    inode: int
    path: str                     # "" for anonymous memory; "[heap]"

    @property
    def readable_private_data(self) -> bool:
        return self.perms.startswith("rw") and self.perms[3] == "p"


_MAPS_LINE = re.compile(r"([0-9a-f]+)-([0-9a-f]+)\s+(\S{4})\s+([0-9a-f]+)\s+([0-9a-f]+):([0-9a-f]+)\s+(\d+)\s*(.*)$")


def parse_maps(text: str) -> List[Mapping]:
    mappings = []
    for line in text.splitlines():
        match = _MAPS_LINE.match(line)
        if match:
            start, end, perms, offset, major, minor, inode, path = match.groups()
            mappings.append(Mapping(int(start, 16), int(end, 16), perms, int(offset, 16),
                                    (int(major, 16), int(minor, 16)), int(inode), path))
    return mappings


def read_maps(pid: int) -> List[Mapping]:
    try:
        with open(f"/proc/{pid}/maps") as stream:
            return parse_maps(stream.read())
    except FileNotFoundError:
        raise InputError(f"no process {pid}") from None
    except PermissionError:
        raise EnvironmentProblem(f"cannot read /proc/{pid}/maps (a process of another user): "
                                 "run ortprof as root or as that user") from None


def same_file(path: str, mapping: Mapping) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino) == (*mapping.device, mapping.inode) \
        and stat.S_ISREG(info.st_mode)


def reachable_path(pid: int, mapping: Mapping) -> Optional[str]:
    """The mapped file as a path in ortprof's mount namespace: its own path when that is the same
    file (device and inode), else the same path under /proc/PID/root (a container); None when
    neither is (the file was replaced or removed since it was mapped)."""
    path = mapping.path[:-len(DELETED)] if mapping.path.endswith(DELETED) else mapping.path
    return next((candidate for candidate in (path, f"/proc/{pid}/root{path}") if same_file(candidate, mapping)),
                None)
