"""Offline builds: point cmake/deps.txt at local archives, and fill such a mirror.

ORT's CMake reads `cmake/deps.txt` (lines `name;URL;SHA1`, `#` comments) and
FetchContent downloads each URL at configure time, checking the SHA1. A URL may
also be a local file path, so rewriting each line to an archive in a mirror
directory makes configure work without network.
"""
import hashlib
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ..errors import InputError, WorkloadError

BACKUP_SUFFIX = ".ortprof-orig"
ARCHIVE_EXTENSIONS = (".tar.gz", ".tar.xz", ".tar.bz2", ".tgz", ".zip", ".tar")
CHUNK = 1 << 20


@dataclass
class Dependency:
    name: str
    url: str
    sha1: str

    @property
    def extension(self):
        basename = self.url.rsplit("/", 1)[-1].lower()
        return next((ext for ext in ARCHIVE_EXTENSIONS if basename.endswith(ext)), ".zip")

    @property
    def mirror_name(self):
        """How fetch-deps names the archive: unique even when URLs share a file name (v1.0.zip)."""
        return f"{self.name}{self.extension}"

    @property
    def url_basename(self):
        return self.url.rsplit("/", 1)[-1]


def parse_deps(text):
    """The dependencies of a deps.txt (comments, blank and malformed lines are not dependencies)."""
    deps = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(";")
        if len(fields) >= 3 and fields[0].strip():
            deps.append(Dependency(fields[0].strip(), fields[1].strip(), fields[2].strip().lower()))
    return deps


def backup_path(deps_file):
    return Path(str(deps_file) + BACKUP_SUFFIX)


def original_text(deps_file):
    """deps.txt as the checkout shipped it (the backup, once ortprof has rewritten it)."""
    deps_file = Path(deps_file)
    backup = backup_path(deps_file)
    source = backup if backup.exists() else deps_file
    if not source.is_file():
        raise InputError(f"{deps_file}: no such file (ORT checkouts before 1.14 have no cmake/deps.txt)")
    return source.read_text()


def sha1_of(path):
    digest = hashlib.sha1()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_archive(dep, mirror):
    """The mirror's archive for `dep`: <name><ext>, <name>.zip, or the URL's file name."""
    for candidate in dict.fromkeys((dep.mirror_name, f"{dep.name}.zip", dep.url_basename)):
        path = Path(mirror) / candidate
        if candidate and path.is_file():
            return path
    return None


@dataclass
class MirrorMatch:
    dep: Dependency
    archive: Optional[Path]
    actual_sha1: Optional[str] = None

    @property
    def matches(self):
        return self.archive is not None and self.actual_sha1 == self.dep.sha1


@dataclass
class Rewrite:
    deps_file: Path
    mirror: Path
    new_text: str
    matches: List[MirrorMatch]
    trusted: List[MirrorMatch] = field(default_factory=list)   # mismatches accepted with --trust-mirror

    def summary(self):
        trusted = f", {len(self.trusted)} with the mirror's own SHA1 (--trust-mirror)" if self.trusted else ""
        return (f"{self.deps_file.name}: {len(self.matches)} dependencies from {self.mirror}{trusted}; "
                f"original kept as {backup_path(self.deps_file).name}")


def plan_rewrite(deps_file, mirror, trust_mirror=False):
    """Check the mirror against deps.txt and compute the rewritten file (nothing is written).

    Every dependency missing from the mirror is named at once; SHA1 mismatches
    are refused unless `trust_mirror`.
    """
    mirror = Path(mirror).resolve()
    if not mirror.is_dir():
        raise InputError(f"--deps-mirror {mirror}: no such directory")
    if ";" in str(mirror):
        raise InputError(f"--deps-mirror {mirror}: a ';' in the path would split deps.txt's fields")
    text = original_text(deps_file)
    matches = []
    for dep in parse_deps(text):
        archive = find_archive(dep, mirror)
        matches.append(MirrorMatch(dep, archive, sha1_of(archive) if archive else None))
    absent = [match.dep for match in matches if match.archive is None]
    if absent:
        names = ", ".join(f"{dep.name} ({dep.mirror_name} or {dep.url_basename})" for dep in absent)
        raise InputError(f"{len(absent)} of {len(matches)} dependencies missing from {mirror}: {names}; fill it "
                         f"with `ortprof build fetch-deps --source {Path(deps_file).resolve().parent.parent} {mirror}` on a "
                         f"machine with network")
    mismatched = [match for match in matches if not match.matches]
    if mismatched and not trust_mirror:
        details = ", ".join(f"{m.dep.name} ({m.archive.name}: {m.actual_sha1}, deps.txt: {m.dep.sha1})"
                            for m in mismatched)
        raise InputError(f"SHA1 mismatch for {len(mismatched)} archive(s) in {mirror}: {details}; use "
                         f"--trust-mirror if they are the right sources (e.g. made with `git archive`)")
    by_name = {match.dep.name: match for match in matches}
    lines = []
    for line in text.splitlines(keepends=True):
        fields = line.rstrip("\r\n").split(";")
        match = by_name.get(fields[0].strip()) if not line.lstrip().startswith("#") and len(fields) >= 3 else None
        if match is None:
            lines.append(line)
            continue
        ending = line[len(line.rstrip("\r\n")):]
        lines.append(";".join([fields[0], str(match.archive), match.actual_sha1, *fields[3:]]) + ending)
    return Rewrite(Path(deps_file), mirror, "".join(lines), matches, mismatched)


def apply_rewrite(rewrite):
    """Write the rewritten deps.txt; the shipped one is kept once as the backup."""
    backup = backup_path(rewrite.deps_file)
    if not backup.exists():
        shutil.copy2(rewrite.deps_file, backup)
    rewrite.deps_file.write_text(rewrite.new_text)


def restore(deps_file):
    """Put the shipped deps.txt back; False when there was nothing to restore."""
    backup = backup_path(deps_file)
    if not backup.exists():
        return False
    shutil.copy2(backup, deps_file)
    backup.unlink()
    return True


def rewritten_mirror(deps_file):
    """The mirror an earlier --deps-mirror pointed deps.txt at, if it still does."""
    if not backup_path(deps_file).exists() or not Path(deps_file).is_file():
        return None
    for dep in parse_deps(Path(deps_file).read_text()):
        if dep.url.startswith("/"):
            return Path(dep.url).parent
    return None


@dataclass
class FetchResult:
    dep: Dependency
    path: Optional[Path]
    status: str            # fetched | present | mismatch | failed
    detail: str = ""
    size: int = 0


def fetch_deps(deps_file, mirror, on_result=None, timeout=60):
    """Download every dependency of deps.txt into `mirror` as <name><ext>, checking SHA1s.

    Archives already there with the right SHA1 are kept, so an interrupted
    fetch resumes. Returns the FetchResults; raises WorkloadError at the end
    when any download failed or did not match.
    """
    mirror = Path(mirror)
    mirror.mkdir(parents=True, exist_ok=True)
    results = []
    for dep in parse_deps(original_text(deps_file)):
        result = _fetch_one(dep, mirror, timeout)
        results.append(result)
        if on_result is not None:
            on_result(result)
    bad = [result for result in results if result.status in ("mismatch", "failed")]
    if bad:
        raise WorkloadError(f"{len(bad)} of {len(results)} dependencies not mirrored: " +
                            "; ".join(f"{result.dep.name}: {result.detail}" for result in bad))
    return results


def _fetch_one(dep, mirror, timeout):
    target = mirror / dep.mirror_name
    if target.is_file() and sha1_of(target) == dep.sha1:
        return FetchResult(dep, target, "present", size=target.stat().st_size)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha1()
    size = 0
    try:
        with urllib.request.urlopen(dep.url, timeout=timeout) as response, open(partial, "wb") as stream:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                digest.update(chunk)
                stream.write(chunk)
                size += len(chunk)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        return FetchResult(dep, None, "failed", f"{dep.url}: {reason}")
    partial.replace(target)
    if digest.hexdigest() != dep.sha1:
        return FetchResult(dep, target, "mismatch", f"SHA1 {digest.hexdigest()} but deps.txt says {dep.sha1}",
                           size)
    return FetchResult(dep, target, "fetched", size=size)

