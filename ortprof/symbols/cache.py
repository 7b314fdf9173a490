"""On-disk cache of what symbolization learned about one binary, keyed by build-id.

Building a binary's function index and spin map takes ~0.5 s for the ORT
wheel (more with a large symbol table); a report reads it back in a few ms.
The cache is a JSON file `<build-id>.json` under `$ORTPROF_CACHE_DIR/symbols`, else
`$XDG_CACHE_HOME/ortprof/symbols`, else `~/.cache/ortprof/symbols`.
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

# Bump when the content or the analysis changes: older entries are rebuilt.
CACHE_FORMAT = 1


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


def load(key: str, directory: Optional[Path] = None) -> Optional[dict]:
    """The cached entry for `key`, or None when missing, unreadable or of another format."""
    path = (directory or cache_dir()) / f"{key}.json"
    try:
        with open(path, encoding="utf-8") as stream:
            entry = json.load(stream)
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
        return None
    return entry


def store(key: str, entry: dict, directory: Optional[Path] = None) -> Optional[Path]:
    """Write `entry` atomically; returns the path, or None if the cache is not writable."""
    directory = directory or cache_dir()
    entry = dict(entry, format=CACHE_FORMAT)
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
