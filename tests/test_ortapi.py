"""The OrtApi table of a libonnxruntime.so, read from the file (ortprof.symbols.ortapi).

Real libraries: the one the ORT wheel ships next to its Python module (the module
itself does not call it) and onnxruntime-node's (tests/js, when installed), plus a
stand-in built from tests/c/fake_ortapi.c that serves only API versions 1..3. The
live tests hold the file-derived addresses against what the library itself returns
when a throwaway child process loads it and calls GetApi.
"""
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

import onnxruntime
from ortprof.errors import InputError
from ortprof.symbols.functions import _dynamic_relocations, read_fde_ranges
from ortprof.symbols.ortapi import API_FUNCTIONS, read_ort_api

TESTS = Path(__file__).resolve().parent
ORT_CAPI = Path(onnxruntime.__file__).resolve().parent / "capi"
WHEEL_LIBRARY = ORT_CAPI / f"libonnxruntime.so.{onnxruntime.__version__}"
PYTHON_MODULE = next(ORT_CAPI.glob("onnxruntime_pybind11_state*.so"))
NODE_BINARIES = TESTS / "js" / "node_modules" / "onnxruntime-node" / "bin" / "napi-v6" / "linux"
NODE_LIBRARY = NODE_BINARIES / "x64" / "libonnxruntime.so.1"
FAKE_SOURCE = TESTS / "c" / "fake_ortapi.c"
FAKE_LIBRARY = TESTS / "fixtures" / "capi-fake-ort-api3.so"
LATER_THAN_VERSION_3 = {"AddSessionConfigEntry", "RunWithBinding", "RunAsync"}

needs_node_ort = pytest.mark.skipif(not NODE_LIBRARY.exists(),
                                    reason="onnxruntime-node is not installed (make test-tools)")


def elf_of(path):
    return ELFFile(io.BytesIO(Path(path).read_bytes()))


# -- the wheel's library (stripped: only .dynsym) -------------------------------------------
def test_wheel_library_serves_its_api_version_and_every_probed_function():
    table = read_ort_api(WHEEL_LIBRARY)
    assert onnxruntime.__version__ == "1.31.1"      # the figures below are this build's
    assert table.ort_version == "1.31.1"
    assert table.api_version == 31
    assert table.absent == {}
    assert [f.name for f in table.functions.values()] == [f.name for f in API_FUNCTIONS]
    assert table.function("Run").index == 9 and table.function("CreateSession").index == 7
    assert len({f.address for f in table.functions.values()}) == len(API_FUNCTIONS)


def test_wheel_library_functions_start_functions_in_text():
    """Each address is the start of a function .eh_frame describes, inside .text."""
    table = read_ort_api(WHEEL_LIBRARY)
    elf = elf_of(WHEEL_LIBRARY)
    text = elf.get_section_by_name(".text")
    starts = {start for start, _ in read_fde_ranges(elf)}
    for function in table.functions.values():
        assert text["sh_addr"] <= function.address < text["sh_addr"] + text["sh_size"], function
        assert function.address in starts, function
        # the executable segment maps file offset X at address X: probes and addresses agree
        assert function.file_offset == function.address


def test_table_slots_in_the_file_hold_the_unrelocated_pointers():
    """The RELATIVE relocation's addend is the pointer; ORT's file also holds it in the slot itself."""
    table = read_ort_api(WHEEL_LIBRARY)
    elf = elf_of(WHEEL_LIBRARY)
    addends = {offset: addend for offset, _, _, addend in _dynamic_relocations(elf)}
    data = next(s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"
                and s["p_vaddr"] <= table.table < s["p_vaddr"] + s["p_filesz"])
    for function in table.functions.values():
        slot = table.table + 8 * function.index
        assert addends[slot] == function.address
        raw = WHEEL_LIBRARY.read_bytes()[slot - data["p_vaddr"] + data["p_offset"]:][:8]
        assert int.from_bytes(raw, "little") == function.address


# -- a library serving API versions 1..3 only ------------------------------------------------
def fake_library_symbols(path):
    """api_N (the function in slot N of the stand-in's table) -> address, from its .symtab."""
    symtab = elf_of(path).get_section_by_name(".symtab")
    return {symbol.name: symbol["st_value"] for symbol in symtab.iter_symbols() if symbol.name.startswith("api_")}


def check_fake_library(path):
    table = read_ort_api(path)
    assert table.api_version == 3
    assert table.ort_version == "0.0.3-fake"
    symbols = fake_library_symbols(path)
    for function in table.functions.values():
        assert symbols[f"api_{function.index}"] == function.address, function
    assert set(table.absent) == LATER_THAN_VERSION_3
    assert set(table.functions) == {f.name for f in API_FUNCTIONS} - LATER_THAN_VERSION_3
    assert table.absent["RunAsync"] == "added in API version 16, this library serves up to version 3"


def test_a_library_serving_older_versions_lacks_the_later_functions():
    check_fake_library(FAKE_LIBRARY)
    with pytest.raises(InputError, match="no RunWithBinding .added in API version 5, this library serves up to version 3"):
        read_ort_api(FAKE_LIBRARY).function("RunWithBinding")
    with pytest.raises(InputError, match="not one of the C API functions"):
        read_ort_api(FAKE_LIBRARY).function("Bogus")


# -- not an ORT library ----------------------------------------------------------------------
def test_python_module_is_not_a_c_api_library():
    with pytest.raises(InputError, match="exports no OrtGetApiBase"):
        read_ort_api(PYTHON_MODULE)


def test_not_x86_64(tmp_path):
    elf = bytearray(FAKE_LIBRARY.read_bytes())
    elf[18:20] = (183).to_bytes(2, "little")        # e_machine: EM_AARCH64
    path = tmp_path / "libonnxruntime.so"
    path.write_bytes(bytes(elf))
    with pytest.raises(InputError, match="not x86-64"):
        read_ort_api(path)


@pytest.mark.parametrize("content, message", [(None, "no such file"), (b"", "empty file"),
                                              (b"#!/bin/sh\n" * 10, "not an ELF file")])
def test_bad_files_give_one_line(tmp_path, content, message):
    path = tmp_path / "libonnxruntime.so"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as raised:
        read_ort_api(path)
    assert "\n" not in str(raised.value)


# -- onnxruntime-node's library ----------------------------------------------------------------
@needs_node_ort
def test_node_library():
    table = read_ort_api(NODE_LIBRARY)
    assert (table.ort_version, table.api_version, table.absent) == ("1.31.1", 31, {})
    assert table.function("Run").file_offset == 0x468d40
    starts = {start for start, _ in read_fde_ranges(elf_of(NODE_LIBRARY))}
    assert all(function.address in starts for function in table.functions.values())


@needs_node_ort
def test_node_arm64_library_is_refused():
    with pytest.raises(InputError, match="EM_AARCH64, not x86-64"):
        read_ort_api(NODE_BINARIES / "arm64" / "libonnxruntime.so.1")


# -- ground truth: what the library returns when it runs (in a throwaway child) ----------------
GROUND_TRUTH = r"""
import ctypes, json, os, sys
path, version, indices = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
library = ctypes.CDLL(path)
library.OrtGetApiBase.restype = ctypes.c_void_p
base = library.OrtGetApiBase()
get_api = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)(ctypes.c_void_p.from_address(base).value)
version_string = ctypes.CFUNCTYPE(ctypes.c_char_p)(ctypes.c_void_p.from_address(base + 8).value)
real = os.path.realpath(path)
load = min(int(line.split("-")[0], 16) for line in open("/proc/self/maps")
           if line.rstrip().endswith(real) and int(line.split()[2], 16) == 0)
table = get_api(version)
print(json.dumps({
    "version": version_string().decode(), "api_base": base - load, "table": table - load,
    "next_version_served": get_api(version + 1) is not None,
    "slots": {str(i): ctypes.c_void_p.from_address(table + 8 * i).value - load for i in indices}}))
"""


def ground_truth(path, version, indices):
    done = subprocess.run([sys.executable, "-c", GROUND_TRUTH, str(path), str(version), json.dumps(indices)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def check_against_the_running_library(path):
    table = read_ort_api(path)
    truth = ground_truth(path, table.api_version, [f.index for f in table.functions.values()])
    assert truth["version"] == table.ort_version
    assert truth["api_base"] == table.api_base
    assert truth["table"] == table.table
    assert truth["next_version_served"] is False       # api_version is the highest it serves
    assert {int(index): address for index, address in truth["slots"].items()} == \
        {f.index: f.address for f in table.functions.values()}


@pytest.mark.live
def test_wheel_library_agrees_with_its_running_self():
    check_against_the_running_library(WHEEL_LIBRARY)


@needs_node_ort
@pytest.mark.live
def test_node_library_agrees_with_its_running_self():
    check_against_the_running_library(NODE_LIBRARY)


@pytest.mark.live
@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
@pytest.mark.parametrize("optimisation", ["-O0", "-O1", "-O2", "-O3", "-Os"])
def test_getapi_compiled_each_way(tmp_path, optimisation):
    """GetApi's machine code differs with the optimisation level (branches, a cmov, the
    version spilled to the stack at -O0); each gives the same table and version."""
    path = tmp_path / "libfake.so"
    subprocess.run(["gcc", optimisation, "-shared", "-fPIC", "-o", str(path), str(FAKE_SOURCE)], check=True)
    check_fake_library(path)
    check_against_the_running_library(path)
