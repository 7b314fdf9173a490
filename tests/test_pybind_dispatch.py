"""ortprof.signals.pybind: InferenceSession.run's pybind11 dispatcher found in a process's memory,
its exits in the module's code, and run spans from uprobes on them.

Fast: records decoded from bytes built here in both known layouts (and one ortprof does not
know), exits of machine code built here, spans paired from perf script lines, the cache, and
the test process itself (conftest imports onnxruntime: its module is mapped here, found by
reading our own memory, no process started). Live: a service started outside ortprof on
ORT 1.31.1 and 1.15.1, timed for 4 s against its own latencies; one whose run() raises; one
running as `nobody`.
"""
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ortprof.errors import EnvironmentProblem, InputError
from ortprof.signals.pybind import dispatch, records, timing
from ortprof.signals.pybind.code import CodeImage, ExitsUnknown, decode_part, function_exits
from ortprof.signals.pybind.dispatch import DispatchSite, DispatchSites, find_run_dispatchers

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "tests" / "workloads" / "pybind_service.py"
OLD_ORT_PYTHON = ROOT / ".venv" / "ort-1.15.1" / "bin" / "python"
SYSTEM_PYTHON = "/usr/bin/python3"
CLASS_TP_NAME = b"onnxruntime.capi.onnxruntime_pybind11_state.InferenceSession"


# -- a process's memory, built here ------------------------------------------------------------
class FakeMemory:
    """Regions of bytes at addresses; reads past a region's end are cut, outside all are None."""

    def __init__(self):
        self.regions = {}

    def add(self, start, size):
        self.regions[start] = bytearray(size)
        return start

    def write(self, address, data):
        for start, buffer in self.regions.items():
            if start <= address and address + len(data) <= start + len(buffer):
                buffer[address - start:address - start + len(data)] = data
                return
        raise AssertionError(f"{address:#x} is in no region")

    def read(self, address, size):
        for start, buffer in self.regions.items():
            if start <= address < start + len(buffer):
                return bytes(buffer[address - start:address - start + size])
        return None


HEAP = 0x5550_0000_0000
CODE = (0x7F00_0000_0000, 0x7F00_0100_0000)
DATA = 0x7F00_0200_0000


class Builder:
    """Strings, PyMethodDefs, a type object and function records, laid out as pybind11 does."""

    def __init__(self, layout="flags9"):
        self.memory = FakeMemory()
        self.layout = records.LAYOUTS_BY_NAME[layout] if isinstance(layout, str) else layout
        self.memory.add(HEAP, 1 << 16)
        self.memory.add(DATA, 1 << 12)
        self.free = HEAP + 0x100
        self.type_object = self.type_named(CLASS_TP_NAME)

    def alloc(self, data, align=16):
        self.free = (self.free + align - 1) // align * align
        address = self.free
        self.memory.write(address, data)
        self.free += len(data)
        return address

    def type_named(self, name):
        tp_name = self.alloc(name + b"\0")
        return self.alloc(struct.pack("<QQQQ", 1, 0, 0, tp_name) + bytes(64))

    def record(self, name, impl, nargs=4, is_method=True, type_object=None, with_def=True, next_=0, policy=0,
               def_offset=None, args=0):
        name_pointer = self.alloc(name.encode() + b"\0")
        method_def = self.alloc(struct.pack("<QQiiQ", name_pointer, CODE[0] + 0x10, 0x82, 0, 0)) if with_def else 0
        data = bytearray(records.RECORD_SIZE)
        args_begin = self.alloc(bytes(32 * args)) if args else 0
        struct.pack_into("<QQQQQQQ", data, 0, name_pointer, 0, self.alloc(b"(self) -> list\0"),
                         args_begin, args_begin + 32 * args, args_begin + 32 * args, impl)
        data[88] = policy
        data[89] = records.IS_METHOD_BIT if is_method else 0
        struct.pack_into("<H", data, self.layout.nargs, nargs)
        struct.pack_into("<Q", data, def_offset if def_offset is not None else self.layout.def_, method_def)
        struct.pack_into("<Q", data, self.layout.scope, type_object or self.type_object)
        struct.pack_into("<Q", data, self.layout.next, next_)
        return self.alloc(bytes(data))

    def scan(self, **kwargs):
        return records.scan(self.memory, [(HEAP, HEAP + (1 << 16))], [CODE], **kwargs)


@pytest.mark.parametrize("layout", [layout.name for layout in records.KNOWN_LAYOUTS])
def test_a_record_is_found_and_decoded_in_each_known_layout(layout):
    built = Builder(layout)
    address = built.record("run", CODE[0] + 0x4B90B0, nargs=4)
    built.record("get_inputs", CODE[0] + 0x100, nargs=1, args=1)
    built.record("helper", CODE[0] + 0x200, is_method=False)
    result = built.scan()
    by_name = {r.name: r for r in result.records}
    assert set(by_name) == {"run", "get_inputs", "helper"}
    run = by_name["run"]
    assert (run.address, run.impl, run.nargs, run.layout, run.class_name, run.is_method, run.overload) == \
        (address, CODE[0] + 0x4B90B0, 4, layout, "InferenceSession", True, 0)
    assert by_name["helper"].class_name is None        # a function, not a method: no scope read


def test_words_that_point_into_the_code_but_are_not_records_are_passed_over():
    built = Builder()
    built.alloc(struct.pack("<QQQQQQQ", 0, 0, 0, 0, 0, 0, CODE[0] + 8))            # no name
    built.alloc(struct.pack("<QQQQQQQ", HEAP + 8, 0, 0, 16, 8, 8, CODE[0] + 8))   # args end before begin
    junk_name = built.alloc(b"not an identifier!\0")
    built.alloc(struct.pack("<QQQQQQQ", junk_name, 0, 0, 0, 0, 0, CODE[0] + 8) + bytes(90))
    built.record("run", CODE[0] + 0x30, policy=9)                                     # no such policy
    result = built.scan()
    assert result.records == [] and result.candidates >= 4


def test_a_record_whose_tail_is_in_no_known_layout_is_not_taken():
    built = Builder()
    built.record("run", CODE[0] + 0x40, def_offset=112)     # def where flags9 has scope
    assert built.scan().records == []


def test_overloads_are_followed_down_the_chain():
    built = Builder()
    second = built.record("run", CODE[0] + 0x80, with_def=False)
    built.record("run", CODE[0] + 0x40, next_=second)
    found = sorted((r.overload, r.impl) for r in built.scan().records)
    assert found == [(0, CODE[0] + 0x40), (1, CODE[0] + 0x80)]


def test_the_scan_stops_after_the_region_with_the_class_and_keeps_to_its_budget():
    built = Builder()
    built.record("run", CODE[0] + 0x40)
    other = built.memory.add(HEAP + (1 << 20), 1 << 12)
    regions = [(HEAP, HEAP + (1 << 16)), (other, other + (1 << 12))]
    stopped = records.scan(built.memory, regions, [CODE], stop_after_class="InferenceSession")
    assert stopped.regions == 1
    assert records.scan(built.memory, regions, [CODE]).regions == 2
    assert records.scan(built.memory, regions, [CODE], budget=1 << 10).records == []


# -- code: a dispatcher's exits -----------------------------------------------------------------------
def _image(parts, size=0x4000):
    """A file whose bytes at each part's address are its code; one FDE per part."""
    data = bytearray(b"\xcc" * size)
    ranges = []
    for start, code in parts:
        data[start:start + len(code)] = code
        ranges.append((start, len(code)))
    return CodeImage(bytes(data), [(0, 0, size)], ranges)


def _rel32(source_end, target):
    return struct.pack("<i", target - source_end)


HOT = 0x1000
COLD = 0x2000
# push rbp; test rdi, rdi; je COLD; pop rbp; ret
HOT_CODE = b"\x55\x48\x85\xff\x0f\x84" + _rel32(HOT + 10, COLD) + b"\x5d\xc3"
# call 0x3000; ud2  (a cold part that never returns)
COLD_CODE = b"\xe8" + _rel32(COLD + 5, 0x3000) + b"\x0f\x0b"


def test_exits_are_the_rets_of_the_hot_part_when_its_cold_part_never_returns():
    image = _image([(HOT, HOT_CODE), (COLD, COLD_CODE)])
    assert function_exits(image, HOT) == (HOT + 11,)
    assert decode_part(HOT_CODE, HOT).jumps_out == (COLD,)


@pytest.mark.parametrize("case, parts, complaint", [
    ("not a function start", [(HOT, HOT_CODE), (COLD, COLD_CODE)], "not a function start"),
    ("indirect jump", [(HOT, b"\x55\xff\xe0\xc3")], "indirect jumps"),
    ("no ret", [(HOT, b"\x55\x0f\x0b")], "no ret"),
    ("cold part returns", [(HOT, HOT_CODE), (COLD, b"\x31\xc0\xc3")], "may return"),
    ("jump outside every function", [(HOT, b"\x55\xe9" + _rel32(HOT + 6, 0x3800) + b"\xc3")], "outside every"),
])
def test_exits_that_cannot_all_be_known_are_refused(case, parts, complaint):
    image = _image(parts)
    entry = HOT + 1 if case == "not a function start" else HOT
    with pytest.raises(ExitsUnknown, match=complaint):
        function_exits(image, entry)


# -- choosing the sites ----------------------------------------------------------------------------
MODULE_MAPS = [dispatch.Mapping(CODE[0], CODE[1], "r-xp", 0x1000, (254, 0), 7, "/x/onnxruntime_pybind11_state.so")]


def _record(name, impl, overload=0, class_name="InferenceSession", layout="flags9"):
    return records.FunctionRecord(HEAP, name, class_name, impl, 4, True, layout, overload)


def test_sites_are_file_offsets_checked_in_the_file():
    image = _image([(HOT, HOT_CODE), (COLD, COLD_CODE)])
    impl = CODE[0] + HOT - 0x1000             # the mapping starts at file offset 0x1000
    found = [_record("run", impl), _record("run_with_iobinding", impl), _record("run", CODE[0] + 5, class_name="Other")]
    layout, sites = dispatch.select_sites(found, MODULE_MAPS, image, 1, "test")
    assert layout == "flags9"
    assert [(s.method, s.entry, s.exits) for s in sites] == [("run", HOT, (HOT + 11,)),
                                                             ("run_with_iobinding", HOT, (HOT + 11,))]


def test_the_layout_failure_is_said_as_such():
    image = _image([(HOT, HOT_CODE)])
    with pytest.raises(EnvironmentProblem, match="function record layout in this wheel is not the one ortprof knows: "
                                                 "no pybind11 function record"):
        dispatch.select_sites([], MODULE_MAPS, image, 1, "test")
    with pytest.raises(EnvironmentProblem, match="not the one ortprof knows: 1 function records .* none of "
                                                 "InferenceSession.run"):
        dispatch.select_sites([_record("get_inputs", CODE[0])], MODULE_MAPS, image, 1, "test")
    with pytest.raises(EnvironmentProblem, match="not the one ortprof knows: the dispatcher .* not a function start"):
        dispatch.select_sites([_record("run", CODE[0] + 1)], MODULE_MAPS, image, 1, "test")


def test_two_different_records_of_run_are_not_guessed_between():
    image = _image([(HOT, HOT_CODE)])
    with pytest.raises(EnvironmentProblem, match="2 different records of InferenceSession.run"):
        dispatch.select_sites([_record("run", CODE[0]), _record("run", CODE[0] + 0x40)], MODULE_MAPS, image, 1, "t")


def test_maps_module_and_regions():
    text = "\n".join([
        "55d0-55f0 rw-p 00000000 00:00 0                          [heap]",
        "7f00-7f10 r--p 00000000 fe:00 5334089                    /v/onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so",
        "7f10-7f20 r-xp 000e0000 fe:00 5334089                    /v/onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so",
        "7f30-7f40 rw-p 00000000 00:00 0 ",
        "7f40-7f50 ---p 00000000 00:00 0 ",
        "7ffc-7ffd rw-p 00000000 00:00 0                          [stack]",
    ])
    mappings = dispatch.parse_maps(text)
    module = dispatch.module_mappings(mappings, 1)
    assert [m.perms for m in module] == ["r--p", "r-xp"] and module[1].device == (0xFE, 0) and module[1].offset == 0xE0000
    assert dispatch.scan_regions(mappings) == [(0x55D0, 0x55F0), (0x7F30, 0x7F40)]
    assert dispatch.process_address_to_offset(0x7F18, module) == 0xE0008
    with pytest.raises(InputError, match="no onnxruntime_pybind11_state module mapped"):
        dispatch.module_mappings(mappings[:1], 1)
    other = text + "\n7f60-7f70 r-xp 00000000 fe:00 99 /w/onnxruntime_pybind11_state.so"
    with pytest.raises(InputError, match="2 different onnxruntime_pybind11_state files"):
        dispatch.module_mappings(dispatch.parse_maps(other), 1)


def test_the_cache_keeps_sites_per_build_id_and_version(tmp_path):
    sites = (DispatchSite("run", 0x4B90B0, (0x4B91FB,), 4), DispatchSite("run", 0x10, (0x20, 0x30), 4, overload=1))
    dispatch.store_cached("abc", dispatch.sites_entry("flags9", sites), tmp_path)
    assert dispatch.sites_from_entry(dispatch.load_cached("abc", tmp_path)) == ("flags9", sites)
    entry = json.loads((tmp_path / "abc.json").read_text())
    (tmp_path / "abc.json").write_text(json.dumps(dict(entry, format="older")))
    assert dispatch.load_cached("abc", tmp_path) is None
    assert dispatch.load_cached("missing", tmp_path) is None


# -- probes and spans --------------------------------------------------------------------------------
SITES = DispatchSites(10, "/m.so", "/m.so", "d7a0", "flags9",
                      (DispatchSite("run", 0x4B90B0, (0x4B91FB,), 4), DispatchSite("run_with_iobinding", 0x4BAD80,
                                                                                  (0x4BAE37, 0x4BAE99), 3)))


def test_probe_definitions_name_events_like_the_capi_probes():
    definitions = timing.probe_definitions("ortprof_77_5", "77", SITES)
    assert definitions == [
        "ortprof_77_5:py_run__77=0x4b90b0 sp=%sp func=+0(%di):x64 inline=+8(%di):u8 a16=+16(%di):x64 "
        "d16=+0(+16(%di)):x64",
        "ortprof_77_5:py_run__77_x0=0x4b91fb sp=%sp ret=%ax",
        "ortprof_77_5:py_run_with_iobinding__77=0x4bad80 sp=%sp func=+0(%di):x64 inline=+8(%di):u8 "
        "a16=+16(%di):x64 d16=+0(+16(%di)):x64",
        "ortprof_77_5:py_run_with_iobinding__77_x0=0x4bae37 sp=%sp ret=%ax",
        "ortprof_77_5:py_run_with_iobinding__77_x1=0x4bae99 sp=%sp ret=%ax",
    ]
    assert timing.probe_definitions("g", "1", SITES, ["run_with_iobinding"])[0].startswith("g:py_run_with_iobinding__1=")
    with pytest.raises(InputError):
        timing.probe_definitions("g", "1", SITES, ["run_async"])


def _line(tid, seconds, event, arguments, group="ortprof_77_5"):
    return f"  500/{tid}  {seconds:.9f}: {group}:{event}: (7f0000001000) {arguments}"


def _entry(tid, seconds, sp, self_=0x7F77, method="py_run", tag="77"):
    return _line(tid, seconds, f"{method}__{tag}", f"sp={sp:#x} func=0x55aa inline=1 a16={self_:#x} d16=0x2")


def _exit(tid, seconds, sp, ret=0x7F10, method="py_run", tag="77", index=0):
    return _line(tid, seconds, f"{method}__{tag}_x{index}", f"sp={sp:#x} ret={ret:#x}")


def test_runs_pair_by_thread_and_stack_pointer():
    lines = [
        _exit(501, 1.0, 0x7000),                                  # began before recording
        _entry(501, 2.0, 0x7000), _exit(501, 2.004, 0x7000),      # a run
        _entry(502, 2.001, 0x9000, self_=0x8888), _exit(502, 2.003, 0x9000, index=0),   # another thread
        _entry(501, 3.0, 0x7000),                                 # raised: no exit before the next entry
        _entry(501, 4.0, 0x7000), _exit(501, 4.001, 0x7000, ret=0x1),   # arguments did not convert
        _entry(501, 5.0, 0x7000),                                 # nested: a run inside a run (a callback)
        _entry(501, 5.1, 0x6000), _exit(501, 5.2, 0x6000), _exit(501, 5.5, 0x7000),
        _entry(501, 6.0, 0x7000),                                 # still running at the end
        "some other line",
        _entry(501, 6.5, 0x7000, tag="99"),                       # another owner's probes
    ]
    spans = timing.pair_runs(timing.dispatch_events(lines, "77"), "flags9")
    summary = [(s.tid, s.start_ns, s.duration_ns, s.outcome) for s in spans]
    assert summary == [
        (501, None, None, "before"),
        (501, 2_000_000_000, 4_000_000, "returned"),
        (502, 2_001_000_000, 2_000_000, "returned"),
        (501, 3_000_000_000, None, "raised"),
        (501, 4_000_000_000, 1_000_000, "no_match"),
        (501, 5_000_000_000, 500_000_000, "returned"),
        (501, 5_100_000_000, 100_000_000, "returned"),
        (501, 6_000_000_000, None, "running"),
    ]
    assert spans[1].session == 0x7F77 and spans[2].session == 0x8888 and spans[1].record == 0x55AA
    assert {s.method for s in spans} == {"run"}


def test_an_exit_of_another_method_at_the_same_stack_pointer_does_not_close_a_run():
    lines = [_entry(501, 1.0, 0x7000), _exit(501, 1.5, 0x7000, method="py_run_with_iobinding"),
             _exit(501, 2.0, 0x7000)]
    spans = timing.pair_runs(timing.dispatch_events(lines), "flags9")
    assert [(s.method, s.outcome) for s in spans] == [("run_with_iobinding", "before"), ("run", "returned")]


def test_self_is_read_as_each_layout_lays_out_the_arguments():
    assert timing.session_of({"inline": "1", "a16": "0x10", "d16": "0x20"}, "flags9") == 0x10
    assert timing.session_of({"inline": "0", "a16": "0x10", "d16": "0x20"}, "flags9") == 0x20
    assert timing.session_of({"self": "0x30"}, "flags8") == 0x30
    assert timing.session_of({"self": "0"}, "flags8") is None


def test_overload_events_name_their_site():
    assert DispatchSite("run", 1, (2,), 4, overload=2).probe_name == "py_run_o2"
    assert timing._site_of("py_run_o2") == ("run", 2)
    assert timing._site_of("py_run_with_ort_values") == ("run_with_ort_values", 0)


# -- this process: conftest imported onnxruntime -----------------------------------------------------------
def test_the_dispatchers_of_this_process_s_own_module(tmp_path):
    import onnxruntime
    import onnxruntime.capi._pybind_state as state
    sites = find_run_dispatchers(os.getpid(), cache_directory=tmp_path)
    assert not sites.from_cache and sites.scanned_bytes > 0
    assert os.path.samefile(sites.module, state.__file__.replace("_pybind_state.py", "") + os.path.basename(sites.module))
    expected = {"run", "run_with_iobinding", "run_with_ort_values"}
    assert expected <= set(sites.methods)
    assert ("run_async" in sites.methods) == hasattr(state.InferenceSession, "run_async")
    # ground truth: the record each bound method carries (its container's pointer field, at 16)
    import ctypes
    base = min(m.start - m.offset for m in dispatch.module_mappings(dispatch.read_maps(os.getpid()), 0))
    for site in sites.sites:
        container = getattr(state.InferenceSession, site.method).__func__.__self__
        record = ctypes.c_uint64.from_address(id(container) + 16).value
        impl = ctypes.c_uint64.from_address(record + records.IMPL_OFFSET).value
        assert impl - base == site.entry, site.method
        assert ctypes.string_at(ctypes.c_uint64.from_address(record).value) == site.method.encode()
    if onnxruntime.__version__ == "1.31.1":
        assert sites.layout == "flags9"
        assert (sites.site("run").entry, sites.site("run").exits) == (0x4B90B0, (0x4B91FB,))
    again = find_run_dispatchers(os.getpid(), cache_directory=tmp_path)
    assert again.from_cache and again.sites == sites.sites and again.layout == sites.layout


def test_a_process_without_the_module_is_refused():
    with pytest.raises(InputError, match="no process"):
        find_run_dispatchers(2 ** 22 + 12345)


# -- live: a service ortprof did not start -------------------------------------------------------
def _perf():
    perf = shutil.which("perf")
    if perf is None or os.geteuid() != 0:
        pytest.skip("needs perf and root (uprobes)")
    return perf


class Service:
    def __init__(self, process, out):
        self.process, self.out = process, Path(out)
        self.ready = json.loads((self.out / "ready.json").read_text())
        self.pid = self.ready["pid"]

    def runs(self, name="latency.txt"):
        path = self.out / name
        if not path.exists():
            return []
        return [tuple(float(x) for x in line.split()) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def services():
    started = []

    def start(out, *arguments, python=sys.executable, prefix=(), timeout=60, script=SERVICE):
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen([*prefix, str(python), str(script), "--out", str(out), *arguments],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        started.append(process)
        deadline = time.monotonic() + timeout
        while not (out / "ready.json").exists():
            if process.poll() is not None:
                pytest.fail(f"the service exited {process.returncode}: {process.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the service was not ready in time")
            time.sleep(0.05)
        time.sleep(1.0)                     # warm-up runs before ortprof looks
        return Service(process, out)

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _saved_model(directory):
    model = Path(directory) / "model.onnx"
    subprocess.run([sys.executable, str(SERVICE), "--out", str(directory), "--save-model", str(model)], check=True)
    os.chmod(model, 0o644)
    return model


def _compare(service, spans, name="latency.txt"):
    """(the service's own durations of the runs recorded, the spans' durations), each span
    nested in exactly one of the service's runs."""
    returned = [s for s in spans if s.outcome == "returned"]
    assert returned, [s.outcome for s in spans]
    first, last = returned[0].start_ns / 1e9, max(s.end_ns for s in returned) / 1e9
    own = [(start, duration) for start, duration in service.runs(name)
           if start >= first - 0.002 and start + duration <= last + 0.002]
    for span in returned:
        nesting = [run for run in own if run[0] <= span.start_ns / 1e9 and span.end_ns / 1e9 <= run[0] + run[1]]
        assert len(nesting) == 1, (span, nesting[:3])
    return [d for _, d in own], [s.duration_ns / 1e9 for s in returned]


def _no_probes_of(perf, owner_pid):
    listed = subprocess.run([perf, "probe", "-l"], capture_output=True, text=True).stdout
    return f"ortprof_{owner_pid}_" not in listed


@pytest.mark.live
@pytest.mark.parametrize("version", ["wheel", "1.15.1"])
def test_a_service_s_runs_are_timed_at_its_dispatcher(services, tmp_path, version):
    perf = _perf()
    if version == "wheel":
        python, arguments = sys.executable, []
    else:
        if not OLD_ORT_PYTHON.exists():
            pytest.skip(f"{OLD_ORT_PYTHON} is not there (make test-tools makes it)")
        python, arguments = OLD_ORT_PYTHON, ["--model", str(_saved_model(tmp_path))]   # no onnx in that venv
    service = services(tmp_path / "service", *arguments, python=python)
    sites = find_run_dispatchers(service.pid, cache_directory=tmp_path / "cache")
    expected_layout = "flags8" if service.ready["version"] == "1.15.1" else "flags9"
    assert sites.layout == expected_layout and sites.site("run") is not None
    if service.ready["version"] == "1.15.1":
        assert "run_async" not in sites.methods
    spans = timing.time_runs(perf, sites, 4.0, str(tmp_path / "perf.data"))
    assert _no_probes_of(perf, os.getpid())
    assert {s.outcome for s in spans} <= {"returned", "running", "before"}
    returned = [s for s in spans if s.outcome == "returned"]
    assert {s.session for s in returned} == {service.ready["session"]}      # self: id(session._sess)
    assert {s.method for s in returned} == {"run"} and len({s.record for s in returned}) == 1
    for before, after in zip(returned, returned[1:]):                       # never re-entered
        assert before.end_ns <= after.start_ns
    own, probed = _compare(service, spans)
    assert len(own) == len(probed) >= 60, (len(own), len(probed))          # ~20 runs/s for 4 s
    own_p50, probed_p50 = statistics.median(own), statistics.median(probed)
    assert probed_p50 <= own_p50                                            # inside the service's own span
    assert abs(own_p50 - probed_p50) <= max(0.1 * own_p50, 0.001), (own_p50, probed_p50)


@pytest.mark.live
def test_a_run_that_raises_leaves_the_probed_service_running(services, tmp_path):
    perf = _perf()
    service = services(tmp_path / "service", "--raise-every", "5")
    sites = find_run_dispatchers(service.pid, cache_directory=tmp_path / "cache")
    spans = timing.time_runs(perf, sites, 3.0, str(tmp_path / "perf.data"))
    assert service.process.poll() is None, service.process.stderr.read()[-2000:]
    time.sleep(0.3)
    assert service.process.poll() is None
    raised = [s for s in spans if s.outcome == "raised"]
    first, last = spans[0].start_ns / 1e9, spans[-1].start_ns / 1e9
    own_raised = [r for r in service.runs("raised.txt") if first - 0.002 <= r[0] <= last - 0.002]
    # the last call of the recording may be one whose raise is only told by a next entry
    assert len(own_raised) - 1 <= len(raised) <= len(own_raised) and len(raised) >= 8
    own, probed = _compare(service, spans)
    assert len(own) == len(probed)



@pytest.mark.live
def test_a_service_of_nobody_is_read_without_running_anything(services, tmp_path, monkeypatch):
    perf = _perf()
    if not shutil.which("setpriv") or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"needs setpriv and {SYSTEM_PYTHON}")
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    if version != str(tuple(sys.version_info[:2])):
        pytest.skip("the system Python's version differs from the venv's")
    from nobody import readable_site
    top = Path(tempfile.mkdtemp(prefix="ortprof-pybind-nobody-", dir="/tmp"))
    try:
        readable_site(top, SERVICE)
        model = _saved_model(top)
        out = top / "out"
        out.mkdir()
        os.chmod(out, 0o777)
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all",
                  "--bounding-set=-all", "env", f"PYTHONPATH={top}", "HOME=/tmp"]
        # the copy in `top`: the clone may be private (mktemp -d, mode 0700)
        service = services(out, "--model", str(model), python=SYSTEM_PYTHON, prefix=prefix, script=top / SERVICE.name)
        import pwd
        assert service.ready["uid"] == pwd.getpwnam("nobody").pw_uid
        started = []

        def refuse(*args, **kwargs):
            started.append(args)
            raise AssertionError("finding the dispatchers started a process")

        with monkeypatch.context() as patch:          # no helper: nothing is started, nothing of the target runs
            patch.setattr(subprocess.Popen, "_execute_child", refuse)
            patch.setattr(os, "fork", refuse)
            sites = find_run_dispatchers(service.pid, cache_directory=tmp_path / "cache")
        assert started == []
        assert os.path.samefile(sites.module, next((top / "onnxruntime" / "capi").glob("onnxruntime_pybind11_state*.so")))
        spans = timing.time_runs(perf, sites, 3.0, str(tmp_path / "perf.data"))
        own, probed = _compare(service, spans)
        assert len(own) == len(probed) >= 40
    finally:
        shutil.rmtree(top, ignore_errors=True)
