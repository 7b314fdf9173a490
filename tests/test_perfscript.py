"""The perf script parser on real captures (explicit fields and perf's default format)."""
import lzma

from conftest import FIXTURES
from ortprof.analysis.perfscript import parse_frame, parse_samples


def test_stripped_capture_gives_dso_relative_addresses():
    samples = list(parse_samples(open(FIXTURES / "stripped-1.31.1-matmul.perf-script.txt")))
    assert len(samples) > 20
    first = samples[0]
    assert first.event == "cpu-clock" and first.period == 2004008
    ort = [f for f in first.frames if "onnxruntime_pybind11_state" in f.dso]
    assert ort and all(f.symbol is None for f in ort)
    assert ort[0].addr == 0x10E5222
    assert first.frames[-1].symbol == "clone3"


def test_default_format_with_cpu_column_and_futex_events():
    path = FIXTURES / "ort-1.15.1-relwithdebinfo-nospin.perf-script-no-inline.txt.xz"
    samples = list(parse_samples(lzma.open(path, "rt")))
    enters = [s for s in samples if s.is_futex_enter]
    exits = [s for s in samples if s.is_futex_exit]
    assert len(enters) == 50 and len(exits) == 46
    assert "op: 0x00000081" in enters[0].trace
    assert enters[0].frames[0].symbol == "syscall"
    assert enters[0].frames[1].symbol == "nsync::nsync_mu_semaphore_v"
    cpu = [s for s in samples if s.is_cpu]
    assert all(s.period == 2004008 for s in cpu)


def test_dso_is_the_last_parenthesized_group():
    line = "\t  1eed3b pybind11::cpp_function::initialize<f(int)>::{lambda(a&)#3}::_FUN+0x10fb (/x/lib.so)\n"
    frame = parse_frame(line)
    assert frame.symbol.endswith("_FUN") and frame.offset == 0x10FB and frame.dso == "/x/lib.so"


def test_event_without_callchain_keeps_its_ip():
    text = ("          python  5185/5188   358.818494:          1  syscalls:sys_exit_futex: 0x1     "
            "7fd7b6aa5ebf pthread_cond_signal@@GLIBC_2.3.2+0x9f (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\n")
    (sample,) = parse_samples(text.splitlines(True))
    assert sample.pid == 5185 and sample.tid == 5188 and sample.is_futex_exit
    assert sample.trace == "0x1"
    assert sample.frames[0].symbol == "pthread_cond_signal@@GLIBC_2.3.2"


def test_event_modifiers_are_dropped_from_the_name():
    text = ("python  5185/5188   358.818494:    5025125 cpu-clock/freq=199/: \n"
            "\t  10e5222 [unknown] (/x/onnxruntime_pybind11_state.so)\n\n"
            "python  5185/5188   358.818600:          1 syscalls:sys_enter_futex: uaddr: 0x1, op: 0x00000081\n"
            "\t  101829 syscall+0x19 (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\n")
    cpu, futex = parse_samples(text.splitlines(True))
    assert cpu.event == "cpu-clock" and cpu.is_cpu and cpu.period == 5025125
    assert futex.event == "syscalls:sys_enter_futex" and futex.trace.startswith("uaddr: 0x1")
