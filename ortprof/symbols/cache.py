"""On-disk cache of what symbolization learned about one binary, keyed by build-id.

Building a binary's function index and spin map takes ~0.5 s for the ORT
wheel (more with a large symbol table); a report reads it back in a few ms.
The cache is a JSON file `<build-id>.json` under `$ORTPROF_CACHE_DIR/symbols`, else
`$XDG_CACHE_HOME/ortprof/symbols`, else `~/.cache/ortprof/symbols`.

Each entry records the version of the code that wrote it (`format`): a short
digest of the source of the modules that decide what an entry holds
(WRITER_MODULES), so that no one has to remember to bump a number. Any change
to them gives entries another version; an entry of another version is not used
but rebuilt from the binary (where the binary is gone, the report says the
cache was of another version). Only ortprof's own code counts: pyelftools and
capstone versions do not.
"""
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

# The modules of this package whose code decides what an entry holds: how the
# binary is read (elfinfo, debugfile), the function index (functions), the spin
# map (spin), what is stored and how it is read back (resolver, cache).
WRITER_MODULES = ("cache", "debugfile", "elfinfo", "functions", "resolver", "spin")


def writer_sources(modules: Iterable[str] = WRITER_MODULES, package: str = __package__) -> Dict[str, str]:
    """{module: its source} of `modules` of `package` (this one by default), read without importing them."""
    sources = {}
    for module in modules:
        spec = importlib.util.find_spec(f"{package}.{module}")
        sources[module] = spec.loader.get_source(spec.name)
    return sources


def code_version(sources: Dict[str, str]) -> str:
    """Short digest of the writer modules' source: the version of the entries they write."""
    digest = hashlib.sha256()
    for module in sorted(sources):
        digest.update(f"{module}\0{sources[module]}\0".encode())
    return digest.hexdigest()[:12]


# Computed once per process (~70 kB of source: well under a millisecond).
CACHE_FORMAT = code_version(writer_sources())


def cache_dir() -> Path:
    """<ortprof cache>/symbols; the ortprof cache is $ORTPROF_CACHE_DIR or ~/.cache/ortprof (models live beside)."""
    from ..demo.model import cache_dir as ortprof_cache_dir
    return ortprof_cache_dir() / "symbols"


def cache_key(build_id: Optional[str], path) -> str:
    """The build-id; for a binary without one, a digest of its path, size and mtime."""
    if build_id:
        return build_id
    stat = os.stat(path)
    digest = hashlib.sha1(f"{os.path.realpath(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return "nobuildid-" + digest.hexdigest()


def load(key: str, directory: Optional[Path] = None) -> Tuple[Optional[dict], Optional[str]]:
    """(entry, None) for a usable entry of `key`; (None, None) when there is none; (None, why)
    when there is one that cannot be used: "unreadable (...)" or "of another version (...)"."""
    path = (directory or cache_dir()) / f"{key}.json"
    try:
        with open(path, encoding="utf-8") as stream:
            entry = json.load(stream)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as error:
        return None, f"unreadable ({error})"
    if not isinstance(entry, dict):
        return None, "unreadable (not a JSON object)"
    if entry.get("format") != CACHE_FORMAT:
        return None, (f"of another version of ortprof's symbolizer "
                      f"(version {entry.get('format')}; this one writes {CACHE_FORMAT})")
    return entry, None


def store(key: str, entry: dict, directory: Optional[Path] = None, version: str = CACHE_FORMAT) -> Optional[Path]:
    """Write `entry` atomically, marked with `version` (another cache's, e.g. signals/pybind's);
    returns the path, or None if the cache is not writable."""
    directory = directory or cache_dir()
    entry = dict(entry, format=version)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(entry, stream, separators=(",", ":"))
        target = directory / f"{key}.json"
        os.replace(tmp, target)
        return target
    except OSError:
        return None
