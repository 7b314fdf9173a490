"""No silent fallbacks in symbolization: a binary whose symbols or source lines cannot be read,
and a symbol cache that cannot be used, are notes in the report saying what is missing and why;
the symbol cache's version follows the code that writes it."""
import json
import os
import shutil
import sys

import pytest
from elftools.common.exceptions import ELFError

from conftest import FIXTURES
from ortprof.analysis import loading, pipeline
from ortprof.analysis.perfscript import Frame, parse_samples
from ortprof.analysis.report import report_from_perf_script
from ortprof.analysis.sampling import build_profile
from ortprof.analysis.stacks import StackSymbolizer
from ortprof.errors import InputError
from ortprof.symbols import cache
from ortprof.symbols.resolver import Symbolizer

STRIPPED_CAPTURE = FIXTURES / "stripped-1.31.1-matmul.perf-script.txt"


def ort_module_of(samples):
    return next(frame.dso for sample in samples for frame in sample.frames if "onnxruntime" in frame.dso)


def samples_of_capture():
    with open(STRIPPED_CAPTURE) as stream:
        return list(parse_samples(stream))


class FailingSymbols:
    """An ORT symbols backend that raises `error` and counts its calls."""

    def __init__(self, error):
        self.error = error
        self.calls = []

    def __call__(self, dso):
        self.calls.append(dso)
        raise self.error


# -- a binary that cannot be symbolized ---------------------------------------------------------

@pytest.mark.parametrize("error", [InputError("gone.so: no such file"), OSError(13, "Permission denied"),
                                   ELFError("Magic number does not match")])
def test_unreadable_binary_is_one_note_and_its_frames_are_named_by_address(error):
    samples = samples_of_capture()
    module = ort_module_of(samples)
    backend = FailingSymbols(error)
    symbolizer = StackSymbolizer(backend, source_lines=False)
    profile = build_profile(samples, symbolizer)

    assert backend.calls == [module]            # tried once, not once per frame
    assert len(symbolizer.notes) == 1
    note = symbolizer.notes[0]
    assert note.startswith(f"{module}: cannot read its symbols (")
    assert "stay addresses" in note and "spin-wait" in note and "counted as compute" in note
    assert "internal error" not in note
    ort_frames = [f for f in profile.frames if profile.mapping_of(f.id).path == module]
    assert ort_frames and all(f.name.startswith(os.path.basename(module) + "+0x") for f in ort_frames)
    assert not any(stack.raw_class == "spin" for stack in profile.stacks)


def test_note_gives_the_reason_without_repeating_the_path():
    symbolizer = StackSymbolizer(FailingSymbols(InputError("/x/libonnxruntime.so: no such file")))
    symbolizer.frame_name(Frame(0x10, None, 0, "/x/libonnxruntime.so"))
    assert symbolizer.notes[0].startswith("/x/libonnxruntime.so: cannot read its symbols (no such file); ")


def test_a_bug_in_the_symbolizer_is_a_note_that_says_internal_error():
    # Not swallowed: the report is kept, and its notes name the bug and what it costs.
    samples = samples_of_capture()
    module = ort_module_of(samples)
    symbolizer = StackSymbolizer(FailingSymbols(KeyError("fde")), source_lines=False)
    build_profile(samples, symbolizer)
    assert symbolizer.notes == [f"{module}: internal error (a bug in ortprof) while reading its symbols: "
                                "KeyError: 'fde'; its frames that perf did not name stay addresses and "
                                "spin-wait in them is counted as compute"]


def test_notes_go_to_the_list_given():
    notes = ["earlier note"]
    symbolizer = StackSymbolizer(FailingSymbols(InputError("no such file")), notes=notes)
    symbolizer.is_spin_address(Frame(0x10, None, 0, "/x/libonnxruntime.so"))
    assert notes[0] == "earlier note" and len(notes) == 2 and symbolizer.notes is notes


# -- source lines ------------------------------------------------------------------------------

def test_binary_without_readable_source_lines_is_a_note(tmp_path):
    not_elf = tmp_path / "libfoo.so"
    not_elf.write_text("not an ELF file")
    symbolizer = StackSymbolizer()
    for addr in (0x10, 0x20):
        assert symbolizer.source_line(Frame(addr, "foo", 0, str(not_elf))) is None
    assert len(symbolizer.notes) == 1
    assert symbolizer.notes[0].startswith(f"{not_elf}: cannot read its source lines (not a readable ELF file")
    assert symbolizer.notes[0].endswith("its hot spots have no file:line")


def test_a_bug_reading_source_lines_is_a_note(tmp_path, monkeypatch):
    from ortprof.symbols import elfinfo

    def broken(path):
        raise IndexError("list index out of range")
    monkeypatch.setattr(elfinfo, "read_elf_info", broken)
    symbolizer = StackSymbolizer()
    assert symbolizer.source_line(Frame(0x10, "foo", 0, "/usr/lib/libfoo.so")) is None
    assert symbolizer.notes == ["/usr/lib/libfoo.so: internal error (a bug in ortprof) while reading its source "
                                "lines: IndexError: list index out of range; its hot spots have no file:line"]


def test_no_note_where_there_is_nothing_to_read():
    symbolizer = StackSymbolizer()
    # perf's names for code that is no ELF file: anonymous memory, a JIT's map, a memfd
    for dso in ("//anon", "/tmp/perf-1234.map", "/memfd:doublemapper (deleted)", "[kernel.kallsyms]"):
        assert symbolizer.source_line(Frame(0x10, None, 0, dso)) is None
    true = shutil.which("true")
    if true:    # a binary without DWARF has no lines, and that is no failure
        assert symbolizer.source_line(Frame(0x10, None, 0, os.path.realpath(true))) is None
    assert symbolizer.notes == [] and symbolizer.problems == {}


# -- the report --------------------------------------------------------------------------------

def test_report_and_its_json_carry_the_note(monkeypatch):
    def make_symbolizer_with_ort_symbols(with_ort_symbols, source_lines=True, notes=None):
        return pipeline.make_symbolizer(True, source_lines, notes)

    def for_dso(self, path, expected_build_id=None):
        raise InputError(f"{path}: not a readable ELF file (Magic number does not match)")
    monkeypatch.setattr(loading, "make_symbolizer", make_symbolizer_with_ort_symbols)
    monkeypatch.setattr(Symbolizer, "for_dso", for_dso)
    report = report_from_perf_script(STRIPPED_CAPTURE)
    module = ort_module_of(samples_of_capture())
    assert report["notes"] == [f"{module}: cannot read its symbols (not a readable ELF file (Magic number does "
                               "not match)); its frames that perf did not name stay addresses and spin-wait in "
                               "them is counted as compute"]
    assert "spin-wait" not in {finding["id"] for finding in report["findings"]}


def test_no_note_when_nothing_failed():
    assert report_from_perf_script(STRIPPED_CAPTURE)["notes"] == []


# -- the symbol cache --------------------------------------------------------------------------

def test_cache_version_follows_the_writers_source():
    sources = cache.writer_sources()
    assert set(sources) == set(cache.WRITER_MODULES) and all(sources.values())
    assert cache.code_version(sources) == cache.CACHE_FORMAT
    for module in cache.WRITER_MODULES:
        changed = dict(sources, **{module: sources[module] + "\n# one more line\n"})
        assert cache.code_version(changed) != cache.CACHE_FORMAT, module


def stored_entry(directory, key, fmt):
    path = directory / f"{key}.json"
    entry = json.loads(path.read_text())
    entry["format"] = fmt
    path.write_text(json.dumps(entry))


def test_entry_of_another_version_is_rebuilt_not_used(tmp_path):
    true = shutil.which("true")
    if not true:
        pytest.skip("no `true` binary to symbolize")
    directory = tmp_path / "symbols"
    cold = Symbolizer(cache_dir=directory).for_dso(true)
    key = cache.cache_key(cold.build_id, os.path.realpath(true))
    assert Symbolizer(cache_dir=directory).for_dso(true).from_cache
    stored_entry(directory, key, "0123456789ab")
    entry, unusable = cache.load(key, directory)
    assert entry is None and unusable.startswith("of another version of ortprof's symbolizer (version 0123456789ab")
    rebuilt = Symbolizer(cache_dir=directory).for_dso(true)
    assert not rebuilt.from_cache
    assert json.loads((directory / f"{key}.json").read_text())["format"] == cache.CACHE_FORMAT


def test_gone_binary_with_a_cache_of_another_version_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("ORTPROF_CACHE_DIR", str(tmp_path))
    build_id = "ab" * 20
    cache.store(build_id, {"build_id": build_id})
    stored_entry(tmp_path / "symbols", build_id, 1)
    notes = []
    assert loading._cached_symbolizer(build_id, notes) is None
    assert len(notes) == 1
    assert notes[0].startswith(f"the symbol cache of build-id {build_id} is of another version of ortprof's "
                               f"symbolizer (version 1; this one writes {cache.CACHE_FORMAT}): spin-wait cannot")
    (tmp_path / "symbols" / f"{build_id}.json").write_text("{not json")
    notes = []
    loading._cached_symbolizer(build_id, notes)
    assert notes[0].startswith(f"the symbol cache of build-id {build_id} is unreadable (")


def test_gone_binary_without_a_cache_says_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("ORTPROF_CACHE_DIR", str(tmp_path))
    notes = []
    assert loading._cached_symbolizer("cd" * 20, notes) is None
    assert notes[0].startswith(f"no symbol cache for build-id {'cd' * 20}: spin-wait cannot be told from compute")


def test_symbolizer_that_cannot_be_loaded_is_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "ortprof.symbols.resolver", None)    # import fails, as without a dependency
    notes = []
    symbolizer = pipeline.make_symbolizer(notes=notes)
    assert symbolizer.ort_symbols is None and len(notes) == 1
    assert notes[0].startswith("ortprof's symbolizer cannot be loaded (") and "counted as compute" in notes[0]
