"""Optimization level from DW_AT_producer, on binaries compiled here with the real gcc."""
import importlib.util
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ortprof.errors import InputError
from ortprof.symbols import producer
from ortprof.symbols.producer import optimization_level, optimization_of

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

SOURCE = "int twice(int x) { return 2 * x; }\nint main(void) { return twice(3) - 6; }\n"
ORT_SPEC = importlib.util.find_spec("onnxruntime")
WHEEL_MODULES = sorted(Path(ORT_SPEC.origin).parent.glob("capi/onnxruntime_pybind11_state*.so")) if ORT_SPEC else []


def compile_c(tmp_path, name, *flags, source=SOURCE):
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    out = tmp_path / name
    subprocess.run(["gcc", *flags, "-o", str(out), str(src)], check=True)
    return out


@pytest.mark.parametrize("flags,optimized,level", [
    (["-O0", "-g"], False, "0"),
    (["-g"], False, "0"),                 # no -O: GCC's default is -O0
    (["-O2", "-g"], True, "2"),
    (["-O3", "-O0", "-g"], False, "0"),   # the last -O wins
    (["-Og", "-g"], True, "g"),
    (["-Os", "-g"], True, "s"),
])
@pytest.mark.live
def test_gcc_levels(tmp_path, flags, optimized, level):
    facts = optimization_of(compile_c(tmp_path, "prog", *flags))
    assert facts.optimized is optimized and facts.level == level
    assert facts.producer.startswith("GNU C")
    assert f"-O{level}" in facts.flags.split() or (flags == ["-g"] and "-O" not in facts.flags)


@pytest.mark.live
def test_without_recorded_switches_or_without_dwarf_nothing_is_known(tmp_path):
    quiet = optimization_of(compile_c(tmp_path, "quiet", "-O0", "-g", "-gno-record-gcc-switches"))
    assert quiet.producer.startswith("GNU C") and quiet.optimized is None and quiet.flags is None
    bare = optimization_of(compile_c(tmp_path, "bare", "-O0"))
    assert bare == producer.NO_DWARF


@pytest.mark.skipif(not WHEEL_MODULES, reason="onnxruntime wheel not installed")
def test_stripped_onnxruntime_wheel_gives_none():
    facts = optimization_of(WHEEL_MODULES[0])
    assert facts.producer is None and facts.optimized is None and facts.flags is None


@pytest.mark.live
def test_separate_debug_file_through_debuglink(tmp_path):
    binary = compile_c(tmp_path, "prog", "-O0", "-g")
    debug = tmp_path / "prog.debug"
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(debug)], check=True)
    subprocess.run(["objcopy", "--strip-debug", f"--add-gnu-debuglink={debug}", str(binary)], check=True)
    facts = optimization_of(binary, debug_roots=[str(tmp_path / "no-roots")])
    assert facts.optimized is False and facts.debug_file == str(debug)
    debug.unlink()
    assert optimization_of(binary, debug_roots=[]) == producer.NO_DWARF


@pytest.mark.live
def test_most_units_decide_over_a_stray_one(tmp_path):
    # A shared object whose first unit was built -O2 and the next three -O0: the Debug build wins.
    sources = []
    for index, flags in enumerate(["-O2", "-O0", "-O0", "-O0"]):
        src = tmp_path / f"unit{index}.c"
        src.write_text(f"int unit{index}(int x) {{ return x + {index}; }}\n")
        obj = tmp_path / f"unit{index}.o"
        subprocess.run(["gcc", flags, "-g", "-fPIC", "-c", "-o", str(obj), str(src)], check=True)
        sources.append(str(obj))
    library = tmp_path / "libmixed.so"
    subprocess.run(["gcc", "-shared", "-o", str(library), *sources], check=True)
    facts = optimization_of(library)
    assert facts.optimized is False and facts.level == "0"
    assert optimization_of(tmp_path / "unit1.o").optimized is False   # relocatable objects too


@pytest.mark.live
def test_reads_a_few_kib_of_a_large_debug_library(tmp_path, monkeypatch):
    # 24 units with 400 functions and structs each: several MB of DWARF, of which only the
    # unit headers and producer strings of the first MAX_UNITS units may be read.
    body = "\n".join(f"struct s{i} {{ int a{i}; double b{i}; char c{i}[{i + 1}]; }};\n"
                     f"int f{i}(struct s{i} *p) {{ return p->a{i} + (int)p->b{i} + p->c{i}[0]; }}"
                     for i in range(400))
    src = tmp_path / "big.c"
    src.write_text(body)
    subprocess.run(["gcc", "-O0", "-g3", "-fPIC", "-c", "-o", str(tmp_path / "big.o"), str(src)], check=True)
    objects = []
    for unit in range(24):   # copies of one unit under other symbol names: cheaper than 24 compiles
        copy = tmp_path / f"big{unit}.o"
        subprocess.run(["objcopy", f"--prefix-symbols=u{unit}_", str(tmp_path / "big.o"), str(copy)], check=True)
        objects.append(str(copy))
    library = tmp_path / "libbig.so"
    subprocess.run(["gcc", "-shared", "-o", str(library), *objects], check=True)
    size = library.stat().st_size

    read = []

    class CountingFile:
        def __init__(self, stream):
            self.stream = stream

        def read(self, count=-1):
            data = self.stream.read(count)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.stream, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

    real_open = open
    monkeypatch.setattr(producer, "open", lambda path, mode="r": CountingFile(real_open(path, mode)), raising=False)
    started = time.perf_counter()
    facts = optimization_of(library)
    elapsed = time.perf_counter() - started
    assert facts.optimized is False
    assert size > 2_000_000
    assert sum(read) < 65_536, f"read {sum(read)} of {size} bytes"
    assert elapsed < 0.2


def test_not_an_elf_file_is_one_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an ELF\n")
    with pytest.raises(InputError, match="notes.txt"):
        optimization_of(path)
    with pytest.raises(InputError, match="no such file"):
        optimization_of(tmp_path / "missing.so")


def test_producer_strings():
    assert optimization_level("GNU C++17 12.2.0 -mtune=generic -march=x86-64 -g -O") == \
        ("-mtune=generic -march=x86-64 -g -O", "1")
    assert optimization_level("GNU C++17 12.2.0 -g -Ofast") == ("-g -Ofast", "fast")
    assert optimization_level("clang version 17.0.6") == (None, None)
