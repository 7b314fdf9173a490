"""Offline builds: point ORT's downloads at local archives, and fill such a mirror.

ORT's CMake reads `cmake/deps.txt` (lines `name;URL;SHA1`, `#` comments) and
FetchContent downloads each URL at configure time, checking the SHA1. A URL may
also be a local file path, so rewriting a line to an archive in a mirror
directory makes that download local. deps.txt lists every platform's and
option's dependencies (40 in 1.15.1); a Linux CPU build with Python bindings
fetches 14 of them. Some versions also hard-code URLs in their cmake files
(1.15.1: eigen in cmake/external/eigen.cmake); those are found by scanning and
rewritten the same way.
"""
import hashlib
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import InputError, WorkloadError

BACKUP_SUFFIX = ".ortprof-orig"
ARCHIVE_EXTENSIONS = (".tar.gz", ".tar.xz", ".tar.bz2", ".tgz", ".zip", ".tar")
CHUNK = 1 << 20

# What a Linux CPU build with Python bindings fetches (ORT 1.14 to 1.2x); the rest
# of deps.txt serves other platforms and options. eigen came from a URL in
# cmake/external/eigen.cmake until it moved into deps.txt.
CPU_BUILD_DEPS = frozenset({"abseil_cpp", "date", "eigen", "flatbuffers", "google_nsync", "json", "microsoft_gsl",
                            "microsoft_wil", "mp11", "onnx", "protobuf", "pybind11", "pytorch_cpuinfo", "re2",
                            "safeint"})
UNIT_TEST_DEPS = frozenset({"googletest"})
# build.py options that pull in more dependencies
OPTION_DEPS = {
    "--use_xnnpack": {"googlexnnpack", "fp16", "fxdiv", "psimd", "pthreadpool"},
    "--use_mimalloc": {"mimalloc"},
    "--use_extensions": {"extensions"},
    "--use_tensorrt": {"onnx_tensorrt"},
    "--use_cuda": {"cutlass"},
    "--use_dnnl": {"dnnl"},
}
PREINSTALLED_EIGEN_FLAG = "--use_preinstalled_eigen"


@dataclass
class Dependency:
    name: str
    url: str
    digest: Optional[str]                 # hex; None when the cmake file declares no hash
    algorithm: str = "sha1"
    declared_in: Optional[Path] = None    # a cmake file, for URLs outside deps.txt
    also_declared_in: List[Path] = field(default_factory=list)   # cmake files declaring this URL again

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

    def where(self, source_dir):
        """'deps.txt' or the cmake file, relative to the checkout."""
        if self.declared_in is None:
            return "deps.txt"
        return str(Path(self.declared_in).relative_to(source_dir)) if source_dir else str(self.declared_in)


def needed_names(with_tests=False, build_flags=()):
    """Dependency names a Linux build with Python bindings fetches, given build.py's flags."""
    names = set(CPU_BUILD_DEPS)
    if with_tests:
        names |= UNIT_TEST_DEPS
    for flag in build_flags:
        names |= OPTION_DEPS.get(flag, set())
    if PREINSTALLED_EIGEN_FLAG in build_flags:
        names.discard("eigen")
    return names


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


_DECLARATION = re.compile(r"\b(FetchContent_Declare|ExternalProject_Add)\s*\(\s*([\w.+-]+)", re.IGNORECASE)
_URL = re.compile(r"\bURL\s+\"?(https?://[^\s\")]+)", re.IGNORECASE)
_URL_HASH = re.compile(r"\bURL_HASH\s+\"?(SHA1|SHA256|MD5)=([0-9a-fA-F]+)", re.IGNORECASE)


def _call_text(text, start):
    """The text of the CMake call whose '(' is at or after `start`, up to its matching ')'."""
    depth, index = 0, text.index("(", start)
    for position in range(index, len(text)):
        depth += {"(": 1, ")": -1}.get(text[position], 0)
        if depth == 0:
            return text[start:position + 1]
    return text[start:]


def cmake_downloads(source_dir):
    """URLs the checkout's cmake files download themselves, not through deps.txt, one per name.

    FetchContent_Declare / ExternalProject_Add blocks with a literal https URL in
    cmake/**/*.cmake and CMakeLists.txt (URLs built from ${DEP_URL_x} come from
    deps.txt). 1.15.1 has eigen in cmake/external/eigen.cmake, declared twice
    (with a patch for ACL builds, and without): one download.
    """
    cmake_dir = Path(source_dir) / "cmake"
    files = sorted(set(cmake_dir.rglob("*.cmake")) | set(cmake_dir.rglob("CMakeLists.txt")))
    found = []
    for path in files:
        parts = path.relative_to(cmake_dir).parts
        if parts[0] == "external" and len(parts) > 2:
            continue   # submodules' own build files, not ORT's
        text = original_file_text(path)
        for match in _DECLARATION.finditer(text):
            call = _call_text(text, match.start())
            url = _URL.search(call)
            if url is None:
                continue
            digest = _URL_HASH.search(call)
            found.append(Dependency(match.group(2), url.group(1), digest.group(2).lower() if digest else None,
                                    digest.group(1).lower() if digest else "sha1", declared_in=path))
    return unique_downloads(found)


def unique_downloads(downloads):
    """One Dependency per name, the first declaration's. Another declaration of the same URL is the
    same download: its cmake file is noted, so the mirror rewrite covers it too. One of another
    URL under the same name is left out (the first is what the build's main branch uses)."""
    by_name = {}
    for dep in downloads:
        first = by_name.setdefault(dep.name, dep)
        if first is dep or dep.url != first.url or dep.declared_in is None:
            continue
        if dep.declared_in != first.declared_in and dep.declared_in not in first.also_declared_in:
            first.also_declared_in.append(dep.declared_in)
    return list(by_name.values())


def backup_path(deps_file):
    return Path(str(deps_file) + BACKUP_SUFFIX)


def original_file_text(path):
    """A file as the checkout shipped it (its backup, once ortprof has rewritten it)."""
    backup = backup_path(path)
    return (backup if backup.exists() else Path(path)).read_text(errors="replace")


def original_text(deps_file):
    """deps.txt as the checkout shipped it (the backup, once ortprof has rewritten it)."""
    deps_file = Path(deps_file)
    if not deps_file.is_file() and not backup_path(deps_file).exists():
        raise InputError(f"{deps_file}: no such file (ORT checkouts before 1.14 have no cmake/deps.txt)")
    return original_file_text(deps_file)


def file_digest(path, algorithm="sha1"):
    digest = hashlib.new(algorithm)
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


def checkout_downloads(source_dir):
    """Every download of the checkout, once each: deps.txt entries, then URLs hard-coded in cmake files."""
    deps_file = Path(source_dir) / "cmake" / "deps.txt"
    return unique_downloads(parse_deps(original_text(deps_file)) + cmake_downloads(source_dir))


@dataclass
class MirrorMatch:
    dep: Dependency
    archive: Optional[Path]
    actual: Optional[str] = None          # the archive's digest, same algorithm as the declared one

    @property
    def matches(self):
        return self.archive is not None and (self.dep.digest is None or self.actual == self.dep.digest)


def mirror_file_names(dep):
    return f"{dep.mirror_name} or {dep.url_basename}" if dep.mirror_name != dep.url_basename else dep.mirror_name


@dataclass
class Rewrite:
    source_dir: Path
    mirror: Path
    new_texts: Dict[Path, str]             # file -> rewritten text
    matches: List[MirrorMatch]             # downloads the mirror has, now local
    unmirrored: List[Dependency]           # not needed by this build and not in the mirror: left at their URLs
    trusted: List[MirrorMatch] = field(default_factory=list)   # mismatches accepted with --trust-mirror

    def summary(self):
        trusted = f", {len(self.trusted)} with the mirror's own digest (--trust-mirror)" if self.trusted else ""
        files = ", ".join(sorted(str(path.relative_to(self.source_dir)) for path in self.new_texts))
        left = (f"; {len(self.unmirrored)} this build does not fetch stay at their URLs"
                if self.unmirrored else "")
        return (f"{files}: {len(self.matches)} downloads from {self.mirror}{trusted}{left}; originals kept as "
                f"*{BACKUP_SUFFIX}")


def plan_rewrite(source_dir, mirror, trust_mirror=False, needed=None):
    """Check the mirror against what the build downloads and compute the rewritten files (nothing is written).

    `needed`: the dependency names this build fetches (default: all). Every
    needed one missing from the mirror is named at once; the others the
    mirror lacks stay at their URLs. Digest mismatches are refused unless
    `trust_mirror`.
    """
    source_dir = Path(source_dir).resolve()
    mirror = Path(mirror).resolve()
    if not mirror.is_dir():
        raise InputError(f"--deps-mirror {mirror}: no such directory")
    if ";" in str(mirror):
        raise InputError(f"--deps-mirror {mirror}: a ';' in the path would split deps.txt's fields")
    downloads = checkout_downloads(source_dir)
    matches, absent = [], []
    for dep in downloads:
        archive = find_archive(dep, mirror)
        if archive is None:
            absent.append(dep)
        else:
            matches.append(MirrorMatch(dep, archive, file_digest(archive, dep.algorithm)))
    lacking = [dep for dep in absent if needed is None or dep.name in needed]
    if lacking:
        names = "; ".join(f"{dep.name} ({mirror_file_names(dep)}, from {dep.where(source_dir)})" for dep in lacking)
        eigen = (" (or give --eigen-path DIR, an Eigen source tree)"
                 if any(dep.name == "eigen" for dep in lacking) else "")
        raise InputError(f"{len(lacking)} of the downloads this build needs are missing from {mirror}: {names}; "
                         f"fill it with `ortprof build fetch-deps --source {source_dir} {mirror}` on a machine "
                         f"with network{eigen}")
    mismatched = [match for match in matches if not match.matches]
    if mismatched and not trust_mirror:
        details = ", ".join(f"{m.dep.name} ({m.archive.name}: {m.actual}, {m.dep.where(source_dir)}: "
                            f"{m.dep.digest})" for m in mismatched)
        raise InputError(f"digest mismatch for {len(mismatched)} archive(s) in {mirror}: {details}; use "
                         f"--trust-mirror if they are the right sources (e.g. made with `git archive`)")
    new_texts = {}
    deps_file = source_dir / "cmake" / "deps.txt"
    in_deps = {match.dep.name: match for match in matches if match.dep.declared_in is None}
    if in_deps:
        new_texts[deps_file] = _rewrite_deps_txt(original_text(deps_file), in_deps)
    for match in matches:
        cmake_files = [match.dep.declared_in] if match.dep.declared_in is not None else []
        for path in cmake_files + match.dep.also_declared_in:
            text = new_texts.get(path, original_file_text(path))
            text = text.replace(match.dep.url, str(match.archive))
            if match.dep.digest and match.actual != match.dep.digest:
                text = re.sub(rf"(URL_HASH\s+\"?{match.dep.algorithm}=){match.dep.digest}",
                              rf"\g<1>{match.actual}", text, flags=re.IGNORECASE)
            new_texts[path] = text
    return Rewrite(source_dir, mirror, new_texts, matches, [dep for dep in absent if dep not in lacking],
                   mismatched)


def _rewrite_deps_txt(text, by_name):
    lines = []
    for line in text.splitlines(keepends=True):
        fields = line.rstrip("\r\n").split(";")
        match = by_name.get(fields[0].strip()) if not line.lstrip().startswith("#") and len(fields) >= 3 else None
        if match is None:
            lines.append(line)
            continue
        ending = line[len(line.rstrip("\r\n")):]
        lines.append(";".join([fields[0], str(match.archive), match.actual, *fields[3:]]) + ending)
    return "".join(lines)


def apply_rewrite(rewrite):
    """Write the rewritten files; each shipped one is kept once as its backup.

    Files an earlier rewrite changed that this one leaves alone go back as shipped.
    """
    for backup in (Path(rewrite.source_dir) / "cmake").rglob(f"*{BACKUP_SUFFIX}"):
        original = backup.with_name(backup.name[:-len(BACKUP_SUFFIX)])
        if original not in rewrite.new_texts:
            shutil.copy2(backup, original)
            backup.unlink()
    for path, text in rewrite.new_texts.items():
        backup = backup_path(path)
        if not backup.exists():
            shutil.copy2(path, backup)
        Path(path).write_text(text)


def restore(source_dir):
    """Put every file ortprof rewrote back as shipped; returns the restored files."""
    restored = []
    for backup in sorted((Path(source_dir) / "cmake").rglob(f"*{BACKUP_SUFFIX}")):
        original = backup.with_name(backup.name[:-len(BACKUP_SUFFIX)])
        shutil.copy2(backup, original)
        backup.unlink()
        restored.append(original)
    return restored


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


def fetch_deps(source_dir, mirror, needed=None, on_result=None, timeout=60):
    """Download the checkout's dependencies (those in `needed`, default all) into `mirror` as <name><ext>.

    Digests are checked; archives already there and matching are kept, so an
    interrupted fetch resumes. Returns the FetchResults; raises WorkloadError
    at the end when any download failed or did not match.
    """
    mirror = Path(mirror)
    mirror.mkdir(parents=True, exist_ok=True)
    results = []
    for dep in checkout_downloads(source_dir):
        if needed is not None and dep.name not in needed:
            continue
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
    if target.is_file() and dep.digest and file_digest(target, dep.algorithm) == dep.digest:
        return FetchResult(dep, target, "present", size=target.stat().st_size)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.new(dep.algorithm)
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
    if dep.digest and digest.hexdigest() != dep.digest:
        return FetchResult(dep, target, "mismatch", f"{dep.algorithm.upper()} {digest.hexdigest()} but "
                           f"{dep.where(None)} says {dep.digest}", size)
    return FetchResult(dep, target, "fetched", size=size)
