"""Symbolization of ORT's native module: function index, spin map, cache, lines, debug files.

Real binaries only: the two ORT wheels `make setup` installs (their facts,
keyed by build-id, are in fixtures/symbols-wheels.json), a small C program
compiled here with gcc, and excerpts of real `perf script` output recorded
on this machine class (fixtures/symbols-*.perf-script.txt).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from elftools.dwarf.callframe import FDE
from elftools.elf.elffile import ELFFile

from ortprof.analysis.perfscript import parse_samples
from ortprof.errors import InputError
from ortprof.symbols import cache
from ortprof.symbols.debugfile import build_id_path, find_debug_file
from ortprof.symbols.elfinfo import DWARF, STRIPPED, read_elf_info
from ortprof.symbols.functions import build_function_index, read_fde_ranges
from ortprof.symbols.lines import LineTable
from ortprof.symbols.resolver import Symbolizer
from ortprof.analysis.spin_names import classify_named_frames
from ortprof.symbols.spin import SPIN_LOOP, SPIN_LOOP_CALLEE, SPIN_PRIMITIVE, find_spin_map

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
WHEEL_FACTS = json.loads((FIXTURES / "symbols-wheels.json").read_text())
ORT_MODULE = re.compile(r"onnxruntime_pybind11_state[^/]*\.so$")


def wheel(version):
    """(path, facts) of an installed ORT wheel whose build-id we have facts for."""
    for build_id, facts in WHEEL_FACTS.items():
        if facts["version"] != version:
            continue
        path = ROOT / facts["venv_relative_path"]
        if not path.exists():
            pytest.fail(f"ORT {version} wheel not installed at {path}: run `make setup`")
        found = read_elf_info(path).build_id
        if found != build_id:
            pytest.fail(f"installed ORT {version} has build-id {found}, facts are for {build_id}: make setup pins the tested wheels")
        return path, facts
    raise AssertionError(f"no facts for ORT {version}")


@pytest.fixture
def symbolizer(tmp_path):
    return Symbolizer(cache_dir=tmp_path / "cache")


# -- a small C program: both spin styles, with symbols and DWARF ----------------

SPIN_C = r"""
#include <stdatomic.h>
#include <stdio.h>

static atomic_int ready;

__attribute__((noinline)) void cpu_relax(void) { __asm__ volatile("pause"); }

__attribute__((noinline)) void spin_pause(void) { cpu_relax(); }

__attribute__((noinline)) int poll_queue(void) { return atomic_load(&ready); }

__attribute__((noinline)) void worker_loop(void) {
    for (int i = 0; i < 1000 && !poll_queue(); i++)
        spin_pause();
}

__attribute__((noinline)) void inlined_loop(void) {
    while (!atomic_load(&ready))
        __asm__ volatile("pause"); /* inlined pause */
}

int main(int argc, char **argv) {
    atomic_store(&ready, argc > 1);
    worker_loop();
    if (argc > 1)
        inlined_loop();
    puts("done");
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_program(tmp_path_factory):
    """{opt level: path} of the spin program built with -g at -O0 and -O2."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc not installed (apt-get install gcc)")
    directory = tmp_path_factory.mktemp("cprog")
    source = directory / "spin.c"
    source.write_text(SPIN_C)
    built = {}
    for level in ("O0", "O2"):
        out = directory / f"spin-{level}"
        subprocess.run([gcc, "-g", f"-{level}", "-o", str(out), str(source)], check=True)
        built[level] = out
    return built


def source_line_of(marker):
    return next(i for i, line in enumerate(SPIN_C.splitlines(), start=1) if marker in line)


def pyelftools_fde_ranges(path):
    with open(path, "rb") as stream:
        entries = ELFFile(stream).get_dwarf_info().EH_CFI_entries()
        return sorted({(e.header.initial_location, e.header.address_range)
                       for e in entries if isinstance(e, FDE)})


# -- function index ----------------------------------------------------------------

@pytest.mark.live
def test_fde_ranges_match_pyelftools_cfi_parser(c_program):
    libc = Path("/usr/lib/x86_64-linux-gnu/libc.so.6")
    for path in [c_program["O2"]] + ([libc] if libc.exists() else []):
        with open(path, "rb") as stream:
            ours = read_fde_ranges(ELFFile(stream))
        assert ours == pyelftools_fde_ranges(path), path
        assert len(ours) > 3


@pytest.mark.live
def test_fde_ranges_without_eh_frame_hdr_walk_eh_frame(c_program, tmp_path):
    bare = tmp_path / "no-hdr"
    subprocess.run(["objcopy", "--remove-section", ".eh_frame_hdr", str(c_program["O2"]), str(bare)], check=True)
    with open(bare, "rb") as stream:
        elf = ELFFile(stream)
        assert elf.get_section_by_name(".eh_frame_hdr") is None
        walked = read_fde_ranges(elf)
    with open(c_program["O2"], "rb") as stream:
        assert walked == read_fde_ranges(ELFFile(stream))


@pytest.mark.parametrize("version", ["1.31.1", "1.15.1"])
def test_stripped_wheel_function_index(version):
    path, facts = wheel(version)
    began = time.perf_counter()
    with open(path, "rb") as stream:
        elf = ELFFile(stream)
        fdes = read_fde_ranges(elf)
        index = build_function_index(elf, prefix="ort")
    elapsed = time.perf_counter() - began
    assert len(fdes) == facts["fde_count"]
    assert elapsed < 3.0, f"index took {elapsed:.2f}s"
    # Only PyInit is named on the stripped wheel; the rest are synthetic.
    assert index.named_count() == 1
    assert index.name(0x10e5222 if version == "1.31.1" else 0x89cdff) == \
        ("ort!fn_10e51e0" if version == "1.31.1" else "ort!fn_89cac0")
    # MLAS's assembly kernels have no FDE: still one function per kernel.
    sample, start = (int(a, 16) for a in facts["asm_sample"])
    assert index.start_of(sample) == start
    assert index.name(sample) == f"ort!fn_{start:x}"
    # Outside any function: the address itself.
    assert index.name(0x10) == "ort!0x10"


@pytest.mark.live
def test_named_binary_uses_symbol_names(c_program, symbolizer):
    symbols = symbolizer.for_dso(c_program["O2"])
    assert symbols.symbol_status == DWARF
    main = symbols.functions.starts[symbols.functions.names.index("main")]
    assert symbols.name(main + 1) == "main" and symbols.function_start(main + 1) == main
    assert symbols.name(symbols.spin.sites[0].addr) == "cpu_relax"


# -- spin map ----------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.31.1", "1.15.1"])
def test_wheel_spin_sites_decoded(version, symbolizer):
    path, facts = wheel(version)
    symbols = symbolizer.for_dso(path)
    pauses = [hex(s.addr) for s in symbols.spin.sites if s.mnemonic == "pause"]
    tpauses = [hex(s.addr) for s in symbols.spin.sites if s.mnemonic == "tpause"]
    assert pauses == facts["pause"]
    assert tpauses == facts["tpause"]
    # A raw byte search finds many more "f3 90" than there are PAUSE instructions.
    assert facts["raw_f390_hits"] > len(pauses)
    assert symbols.spin.style == facts["spin_style"]
    assert [hex(p.start) for p in symbols.spin.primitives] == facts["spin_primitives"]
    assert int(facts["worker_spin_function"], 16) in symbols.spin.spin_functions
    if facts["spin_primitives"]:
        # SpinPause of ORT >= 1.23 has many callers.
        assert len(symbols.spin.primitives[0].call_sites) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("version", ["1.31.1", "1.15.1"])
def test_candidate_selection_finds_what_decoding_everything_finds(version):
    path, _ = wheel(version)
    with open(path, "rb") as stream:
        elf = ELFFile(stream)
        index = build_function_index(elf)
        selected = find_spin_map(elf, stream, index)
        everything = find_spin_map(elf, stream, index, scan_all=True)
    assert selected.to_json() == everything.to_json()


@pytest.mark.live
def test_both_spin_styles_in_compiled_program(c_program, symbolizer):
    for level, path in c_program.items():
        symbols = symbolizer.for_dso(path)
        names = lambda pairs: sorted(name for _, name in pairs)  # noqa: E731
        # spin_pause only calls cpu_relax: a wrapper, itself a primitive.
        assert names(symbols.spin_primitives) == ["cpu_relax", "spin_pause"], level
        assert names(symbols.spin_functions) == ["inlined_loop", "worker_loop"], level
        worker = next(loop for loop in symbols.spin.loops if symbols.name(loop.function_start) == "worker_loop")
        poll_queue = symbols.functions.starts[symbols.functions.names.index("poll_queue")]
        assert poll_queue in worker.callees
        inside = worker.ranges[0][0]
        assert symbols.spin_kind(inside) == (SPIN_LOOP, worker.function_start)
        pause_in_primitive = next(s.addr for s in symbols.spin.sites if not s.in_loop)
        assert symbols.spin_kind(pause_in_primitive + 2)[0] == SPIN_PRIMITIVE
        # poll_queue's own code is spin only when called from the spin loop.
        call_return = next(end for begin, end in worker.ranges)
        assert symbols.spin_kind(poll_queue, caller=call_return - 1) == (SPIN_LOOP_CALLEE, worker.function_start)
        assert symbols.spin_kind(poll_queue) is None
        main = symbols.functions.starts[symbols.functions.names.index("main")]
        assert not symbols.is_spin(main)


def _samples(fixture):
    with open(FIXTURES / fixture, encoding="utf-8") as stream:
        return [s for s in parse_samples(stream) if s.is_cpu]


def _spin_share_by_thread(samples, symbols):
    """{tid: (samples, spin samples, Counter of (rule, spinning function))}."""
    totals = Counter()
    spins = Counter()
    rules = {}
    for sample in samples:
        totals[sample.tid] += 1
        frames = sample.frames
        if not frames or not ORT_MODULE.search(frames[0].dso):
            continue
        caller = frames[1].addr if len(frames) > 1 and frames[1].dso == frames[0].dso else None
        kind = symbols.spin_kind(frames[0].addr, caller)
        if kind is not None:
            spins[sample.tid] += 1
            rules.setdefault(sample.tid, Counter())[kind] += 1
    return {tid: (totals[tid], spins[tid], rules.get(tid, Counter())) for tid in totals}


def _worker_and_caller(samples):
    """The caller is the process's main thread (tid == pid on Linux: the lowest tid here)."""
    tids = sorted({s.tid for s in samples})
    caller = tids[0]
    worker = max((t for t in tids if t != caller), key=lambda t: sum(s.tid == t for s in samples))
    return worker, caller


@pytest.mark.parametrize("version", ["1.31.1", "1.15.1"])
def test_real_worker_samples_are_spin_with_default_options(version, symbolizer):
    path, facts = wheel(version)
    symbols = symbolizer.for_dso(path)
    samples = _samples(f"symbols-{version}-default.perf-script.txt")
    worker, caller = _worker_and_caller(samples)
    shares = _spin_share_by_thread(samples, symbols)
    total, spin, rules = shares[worker]
    assert total >= 50
    assert spin / total > 0.9, shares
    spinners = {spinner for _, spinner in rules}
    assert spinners == {int(facts["worker_spin_function"], 16)}
    if version == "1.31.1":
        # Out-of-line SpinPause: leaf in it, in the loop, and in the queue polling it calls.
        assert {rule for rule, _ in rules} == {SPIN_PRIMITIVE, SPIN_LOOP, SPIN_LOOP_CALLEE}
        # The caller's end-of-section spin has another spinning function.
        _, caller_spin, caller_rules = shares[caller]
        assert caller_spin >= 1
        assert {spinner for _, spinner in caller_rules} == {int(facts["caller_spin_function"], 16)}
    else:
        assert {rule for rule, _ in rules} == {SPIN_LOOP}


@pytest.mark.parametrize("version", ["1.31.1", "1.15.1"])
def test_real_worker_samples_are_not_spin_without_spinning(version, symbolizer):
    path, _ = wheel(version)
    symbols = symbolizer.for_dso(path)
    samples = _samples(f"symbols-{version}-nospin.perf-script.txt")
    worker, _ = _worker_and_caller(samples)
    total, spin, _ = _spin_share_by_thread(samples, symbols)[worker]
    assert total >= 30
    assert spin / total < 0.05
    # The worker computes in MLAS's assembly kernels, named per kernel.
    leaves = Counter(symbols.name(s.frames[0].addr) for s in samples
                     if s.tid == worker and s.frames and ORT_MODULE.search(s.frames[0].dso))
    top, _ = leaves.most_common(1)[0]
    assert top.startswith("ort!fn_")


@pytest.mark.parametrize("build,default_min", [("debug", 0.85), ("relwithdebinfo", 0.95)])
def test_named_frames_classifier_on_symbolized_builds(build, default_min):
    for options, low, high in (("default", default_min, 1.0), ("nospin", 0.0, 0.0)):
        samples = _samples(f"symbols-1.15.1-{build}-{options}.perf-script.txt")
        worker, caller = _worker_and_caller(samples)
        kinds = {tid: [classify_named_frames([f.symbol or "" for f in s.frames])
                       for s in samples if s.tid == tid] for tid in (worker, caller)}
        share = sum(k is not None for k in kinds[worker]) / len(kinds[worker])
        assert low <= share <= high, (build, options, share)
        assert all(k is None for k in kinds[caller])
        for kind in kinds[worker]:
            if kind is not None:
                assert kind[1].endswith("ThreadPoolTempl<onnxruntime::Env>::WorkerLoop")


def test_named_frames_classifier_rules():
    worker = "onnxruntime::concurrency::ThreadPoolTempl<onnxruntime::Env>::WorkerLoop"
    assert classify_named_frames(["_mm_pause", "onnxruntime::concurrency::SpinPause", worker]) == \
        (SPIN_PRIMITIVE, worker)
    assert classify_named_frames([worker, "start_thread"]) == (SPIN_LOOP, worker)
    # A task invoked from the worker loop is work, whatever it calls.
    assert classify_named_frames(["std::vector<float>::operator[]", "MlasSgemmOperation",
                                  "std::function<void ()>::operator()", worker]) is None
    assert classify_named_frames(["std::_Function_base::_M_empty", "std::function<void ()>::operator()",
                                  worker]) is None


# -- cache ---------------------------------------------------------------------------

def test_cache_cold_then_warm(monkeypatch, tmp_path):
    path, facts = wheel("1.31.1")
    monkeypatch.setenv("ORTPROF_CACHE_DIR", str(tmp_path / "c"))
    cold = Symbolizer().for_dso(path)
    entry = tmp_path / "c" / "symbols" / f"{cold.build_id}.json"
    assert not cold.from_cache and entry.exists()
    warm = Symbolizer().for_dso(path)
    assert warm.from_cache
    assert warm.build_seconds < cold.build_seconds / 5, (cold.build_seconds, warm.build_seconds)
    for addr in (0x10e5222, 0x10e7339, 0x1470eb0, 0x10e8523):
        assert warm.name(addr) == cold.name(addr)
        assert warm.is_spin(addr) == cold.is_spin(addr)
    assert warm.spin.to_json() == cold.spin.to_json()
    # A damaged entry is rebuilt, not trusted.
    entry.write_text("{not json")
    rebuilt = Symbolizer().for_dso(path)
    assert not rebuilt.from_cache and json.loads(entry.read_text())["format"] == cache.CACHE_FORMAT
    # The binary gone (a run from another machine): names still come from the cache.
    gone = Symbolizer().for_build_id(cold.build_id)
    assert gone is not None and gone.name(0x10e5222) == "ort!fn_10e51e0" and gone.is_spin(0x10e5222)


def test_cache_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("ORTPROF_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / ".cache" / "ortprof" / "symbols"
    monkeypatch.setenv("ORTPROF_CACHE_DIR", str(tmp_path / "x"))
    assert cache.cache_dir() == tmp_path / "x" / "symbols"


def test_build_id_mismatch_and_missing_binary(symbolizer, tmp_path):
    path, _ = wheel("1.15.1")
    with pytest.raises(InputError, match="changed since the recording"):
        symbolizer.for_dso(path, expected_build_id="00" * 20)
    with pytest.raises(InputError, match="no such file"):
        symbolizer.for_dso(tmp_path / "gone.so")
    not_elf = tmp_path / "not-elf.so"
    not_elf.write_text("text")
    with pytest.raises(InputError, match="not a readable ELF"):
        symbolizer.for_dso(not_elf)


def test_lookups_are_fast(symbolizer):
    path, _ = wheel("1.31.1")
    symbols = symbolizer.for_dso(path)
    addrs = [symbols.functions.starts[i] + 3 for i in range(0, len(symbols.functions), 4)]
    began = time.perf_counter()
    for _ in range(2):
        for addr in addrs:
            symbols.name(addr)
            symbols.is_spin(addr)
    per_lookup = (time.perf_counter() - began) / (4 * len(addrs))
    assert per_lookup < 20e-6, per_lookup


# -- source lines and debug files -------------------------------------------------

def _variants(c_program, directory):
    """The program as built, in DWARF 4, and both without .debug_aranges (CU found from DIEs)."""
    dwarf4 = directory / "spin-dwarf4"
    source = c_program["O2"].parent / "spin.c"
    subprocess.run([shutil.which("gcc"), "-g", "-gdwarf-4", "-O2", "-o", str(dwarf4), str(source)], check=True)
    variants = list(c_program.values()) + [dwarf4]
    for built in list(variants[1:]):
        bare = directory / f"{built.name}-no-aranges"
        subprocess.run(["objcopy", "--remove-section", ".debug_aranges", str(built), str(bare)], check=True)
        variants.append(bare)
    return variants


@pytest.mark.live
def test_lines_match_addr2line(c_program, tmp_path):
    for path in _variants(c_program, tmp_path):
        with open(path, "rb") as stream:
            index = build_function_index(ELFFile(stream))
        with LineTable(path) as table:
            named = [f.start for f in index if f.named]
            assert len(named) >= 6
            expected = subprocess.run(["addr2line", "-e", str(path)] + [hex(a) for a in named],
                                      capture_output=True, text=True, check=True).stdout.split()
            resolved = 0
            for addr, reference in zip(named, expected):
                found = table.lookup(addr)
                if reference.startswith("??") or reference.endswith((":?", ":0")):
                    assert found is None or found.line == 0
                else:
                    assert str(found) == reference, (path.name, hex(addr))
                    resolved += 1
            assert resolved >= 6, path.name


@pytest.mark.live
def test_source_line_of_inlined_pause(c_program, symbolizer):
    symbols = symbolizer.for_dso(c_program["O2"])
    site = next(s.addr for s in symbols.spin.sites if s.in_loop)
    found = symbols.source_line(site)
    assert found.file.endswith("spin.c")
    assert found.line == source_line_of("/* inlined pause */")


@pytest.fixture
def split_debug(c_program, tmp_path):
    """The -O2 program stripped, with its DWARF in a separate file."""
    binary = tmp_path / "app" / "spin"
    binary.parent.mkdir()
    debug = tmp_path / "spin.debug"
    subprocess.run(["objcopy", "--only-keep-debug", str(c_program["O2"]), str(debug)], check=True)
    subprocess.run(["objcopy", "--strip-all", "--add-gnu-debuglink", str(debug),
                    str(c_program["O2"]), str(binary)], check=True)
    return binary, debug


@pytest.mark.live
def test_debug_file_by_build_id(split_debug, tmp_path):
    binary, debug = split_debug
    info = read_elf_info(binary)
    assert info.symbol_status == STRIPPED and info.build_id
    root = tmp_path / "debugroot"
    assert find_debug_file(binary, roots=[root]) is None
    target = Path(build_id_path(root, info.build_id))
    target.parent.mkdir(parents=True)
    shutil.copy(debug, target)
    assert find_debug_file(binary, roots=[root]) == str(target)


@pytest.mark.live
def test_debug_file_by_debuglink(split_debug, tmp_path, symbolizer):
    binary, debug = split_debug
    assert find_debug_file(binary, roots=[]) is None
    beside = binary.parent / ".debug" / debug.name
    beside.parent.mkdir()
    shutil.copy(debug, beside)
    assert find_debug_file(binary, roots=[]) == str(beside)
    # The stripped binary now gets real names, spin sites and lines.
    symbols = Symbolizer(cache_dir=tmp_path / "c", debug_roots=[]).for_dso(binary)
    assert symbols.debug_file == str(beside) and symbols.symbol_status == DWARF
    assert sorted(n for _, n in symbols.spin_functions) == ["inlined_loop", "worker_loop"]
    site = next(s.addr for s in symbols.spin.sites if s.in_loop)
    assert symbols.source_line(site).line == source_line_of("/* inlined pause */")


@pytest.mark.live
def test_debuglink_crc_guards_binaries_without_build_id(tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc not installed (apt-get install gcc)")
    source = tmp_path / "spin.c"
    source.write_text(SPIN_C)
    full = tmp_path / "full"
    subprocess.run([gcc, "-g", "-O1", "-Wl,--build-id=none", "-o", str(full), str(source)], check=True)
    debug = tmp_path / "spin.debug"
    binary = tmp_path / "app" / "spin"
    binary.parent.mkdir()
    subprocess.run(["objcopy", "--only-keep-debug", str(full), str(debug)], check=True)
    subprocess.run(["objcopy", "--strip-all", "--add-gnu-debuglink", str(debug), str(full), str(binary)],
                   check=True)
    assert read_elf_info(binary).build_id is None
    beside = binary.parent / debug.name
    shutil.copy(debug, beside)
    assert find_debug_file(binary, roots=[]) == str(beside)
    # Same name, other content: the CRC does not match.
    other = tmp_path / "other"
    subprocess.run([gcc, "-g", "-O0", "-Wl,--build-id=none", "-o", str(other), str(source)], check=True)
    shutil.copy(other, beside)
    assert find_debug_file(binary, roots=[]) is None


# -- live: real workloads under perf -------------------------------------------

LOOP_PY = r"""
import sys, time
import numpy as np, onnxruntime as ort
so = ort.SessionOptions()
if sys.argv[2] == "0":
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
session = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
x = np.random.rand(128, 512).astype(np.float32)
print("ready", flush=True)
end = time.time() + float(sys.argv[3])
while time.time() < end:
    session.run(None, {"x": x})
    time.sleep(0.05)
"""


def _matmul_model(path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "x"
    for i in range(4):
        weights.append(numpy_helper.from_array((rng.standard_normal((512, 512)) * 0.05).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"]))
        previous = f"r{i}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(nodes, "matmuls",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [128, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [128, 512])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7   # loadable by ORT 1.15
    onnx.save(model, str(path))


@pytest.mark.slow
@pytest.mark.parametrize("version,python", [
    ("1.31.1", Path(sys.executable)),
    ("1.15.1", ROOT / ".venv" / "ort-1.15.1" / "bin" / "python"),
])
def test_live_spin_share(version, python, tmp_path, symbolizer):
    perf = shutil.which("perf")
    if perf is None or os.geteuid() != 0:
        pytest.skip("needs perf as root")
    path, _ = wheel(version)
    model = tmp_path / "matmuls.onnx"
    _matmul_model(model)
    script = tmp_path / "loop.py"
    script.write_text(LOOP_PY)
    symbols = symbolizer.for_dso(path)
    shares = {}
    for spinning in ("1", "0"):
        workload = subprocess.Popen([str(python), str(script), str(model), spinning, "10"],
                                    stdout=subprocess.PIPE, text=True)
        try:
            assert workload.stdout.readline().strip() == "ready"
            time.sleep(1.5)
            data = tmp_path / f"perf-{spinning}.data"
            subprocess.run([perf, "record", "-q", "-e", "cpu-clock", "-F", "499", "--call-graph", "dwarf,16384",
                            "-o", str(data), "-p", str(workload.pid), "--", "sleep", "3"],
                           check=True, capture_output=True)
        finally:
            workload.send_signal(signal.SIGTERM)
            workload.wait(timeout=30)
        text = subprocess.run([perf, "script", "-i", str(data), "-F",
                               "comm,tid,time,period,event,ip,sym,symoff,dso", "--no-inline"],
                              check=True, capture_output=True, text=True).stdout
        samples = [s for s in parse_samples(text.splitlines(keepends=True)) if s.is_cpu]
        by_thread = _spin_share_by_thread(samples, symbols)
        worker = max((tid for tid in by_thread if tid != workload.pid), key=lambda tid: by_thread[tid][0])
        total, spin, _ = by_thread[worker]
        shares[spinning] = (total, spin / total)
    assert shares["1"][0] > 200 and shares["1"][1] > 0.8, shares
    assert shares["0"][1] < 0.05, shares
