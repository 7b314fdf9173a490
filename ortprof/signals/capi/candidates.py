"""The libonnxruntime.so files a command about to be launched will most likely load, found
before it runs, so its C API calls are probed from the first one (a session is usually
created within milliseconds of loading the library, before a look at /proc/PID/maps would
see it).

- An ELF executable that links libonnxruntime.so: its DT_NEEDED entry resolved as the
  dynamic linker would (RPATH/RUNPATH with $ORIGIN, LD_LIBRARY_PATH, the usual directories);
  nothing of the program runs.
- A library path on the command line (a program that dlopens the library it is given).
- node: the onnxruntime-node package's Linux x64 libraries in the node_modules directories
  Node would search from the script's directory and the working directory (and NODE_PATH).
Other runtimes (Java, .NET) unpack or load their library from places found only at run time:
the capture then finds it in /proc/PID/maps while it waits for warm-up.
"""
import glob
import os
import shutil
from typing import Iterable, List, Mapping, Optional

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

LIBRARY_PREFIX = "libonnxruntime.so"
SYSTEM_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib",
               "/usr/local/lib")
NODE_PACKAGE_LIBS = "onnxruntime-node/bin/*/linux/x64/libonnxruntime.so*"


def candidate_libraries(argv: List[str], cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> List[str]:
    """Existing library files, real paths, without duplicates (empty when none is found)."""
    env = os.environ if env is None else env
    cwd = cwd or os.getcwd()
    if not argv:
        return []
    executable = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=env.get("PATH")) or argv[0]
    found: List[str] = list(_needed_libraries(executable, env))
    # a program told which library to load (dlopen of a path given on its command line)
    found += [arg for arg in argv[1:] if _is_library_name(os.path.basename(arg)) and os.path.isfile(arg)]
    if os.path.basename(executable).startswith("node"):
        script = next((arg for arg in argv[1:] if not arg.startswith("-")), None)
        starts = [os.path.dirname(os.path.abspath(os.path.join(cwd, script)))] if script else []
        found += _node_libraries(starts + [cwd], env.get("NODE_PATH", ""))
    unique: List[str] = []
    for path in found:
        real = os.path.realpath(path)
        if os.path.isfile(real) and real not in unique:
            unique.append(real)
    return unique


def _is_library_name(name: str) -> bool:
    return name.startswith(LIBRARY_PREFIX)


def _needed_libraries(executable: str, env: Mapping[str, str]) -> Iterable[str]:
    try:
        with open(executable, "rb") as stream:
            elf = ELFFile(stream)
            dynamic = next((s for s in elf.iter_sections() if isinstance(s, DynamicSection)), None)
            if dynamic is None:
                return []
            needed, search = [], []
            for tag in dynamic.iter_tags():
                # pyelftools sets the string of a tag as an attribute named after it (needed, rpath, runpath)
                if tag.entry.d_tag == "DT_NEEDED" and getattr(tag, "needed").startswith(LIBRARY_PREFIX):
                    needed.append(getattr(tag, "needed"))
                elif tag.entry.d_tag in ("DT_RPATH", "DT_RUNPATH"):
                    value = getattr(tag, "rpath" if tag.entry.d_tag == "DT_RPATH" else "runpath")
                    origin = os.path.dirname(os.path.realpath(executable))
                    search += [part.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
                               for part in value.split(":") if part]
    except (OSError, ELFError, ValueError):
        return []
    search += [part for part in env.get("LD_LIBRARY_PATH", "").split(":") if part] + list(SYSTEM_DIRS)
    resolved = []
    for name in needed:     # the first directory that has it, as the dynamic linker takes it
        path = next((os.path.join(d, name) for d in search if os.path.exists(os.path.join(d, name))), None)
        if path is not None:
            resolved.append(path)
    return resolved


def _node_libraries(starts: List[str], node_path: str) -> List[str]:
    directories = []
    for start in starts:
        directory = start
        while True:
            directories.append(os.path.join(directory, "node_modules"))
            parent = os.path.dirname(directory)
            if parent == directory:
                break
            directory = parent
    directories += [part for part in node_path.split(":") if part]
    for directory in dict.fromkeys(directories):
        libraries = sorted(glob.glob(os.path.join(directory, NODE_PACKAGE_LIBS)))
        if libraries:
            return libraries          # the first node_modules that has the package is the one Node loads
    return []
