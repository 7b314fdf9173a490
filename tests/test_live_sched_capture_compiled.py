"""The compiled BPF program (signals/sched/compiled), built here from its sources as `make setup`
builds it: the loader attaches, records a child's futex waits and context switches in the lines
the bpftrace program writes (read back by the same readers), stops cleanly on SIGTERM or SIGINT
with its last records written, and leaves no program loaded (bpftool, the kernel's own list)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ortprof.signals.futex import bpf as futex_bpf
from ortprof.signals.futex.counts import read_futex_counts
from ortprof.signals.sched import compiled
from ortprof.signals.sched.events import read_events

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(os.geteuid() != 0, reason="BPF programs load as root only"),
              pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="the kernel has no BTF")]

# Three threads hand a token round 200 times (futex waits and wakes), then the process sleeps
# 0.3 s (an off-CPU stretch that is not a futex wait), all after it reads a line on stdin.
CHILD = """
import sys, threading, time
sys.stdin.readline()
conditions = [threading.Condition() for _ in range(3)]
turn = [0]
def worker(index):
    for _ in range(200):
        with conditions[index]:
            while turn[0] != index:
                conditions[index].wait()
        turn[0] = (index + 1) % 3
        with conditions[turn[0]]:
            conditions[turn[0]].notify()
threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
time.sleep(0.3)
"""


def bpftool():
    return shutil.which("bpftool") or ("/usr/sbin/bpftool" if os.path.exists("/usr/sbin/bpftool") else None)


def program_ids_of(pid):
    """The ids of the BPF programs process `pid` holds open (the kernel's /proc fdinfo)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as stream:
                ids.update(int(line.split()[1]) for line in stream if line.startswith("prog_id:"))
        except OSError:
            continue
    return ids


def loaded(program_id):
    """Whether the kernel still has BPF program `program_id` (bpftool asks it by id)."""
    return subprocess.run([bpftool(), "prog", "show", "id", str(program_id)], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    if bpftool() is None or shutil.which("clang") is None:
        pytest.fail("clang / bpftool missing: `make setup` installs them (scripts/ensure-bpf-build.sh)")
    built, words = compiled.build(tmp_path_factory.mktemp("bpf-build"))
    assert built, words
    return words.split()[-1]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_built_loader_records_a_child_and_stops_cleanly(loader, stop, tmp_path):
    counter, seconds = futex_bpf.start_compiled_counter(loader, tmp_path, sched=True)
    try:
        assert 0 < seconds < 10
        held = program_ids_of(counter.process.pid)
        assert len(held) == 8 and all(loaded(program_id) for program_id in held), held   # futex/marks 2, sched 6
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE)
        futex_bpf.set_target(child.pid)
        futex_bpf.mark_window(opening=True)
        child.communicate(b"\n", timeout=60)
        futex_bpf.mark_window(opening=False)
        counter.process.send_signal(stop)
        assert counter.process.wait(timeout=10) == 0
    finally:
        counter.stop(timeout=10)
    output = (tmp_path / futex_bpf.FUTEX_BPF_OUT).read_text()
    assert output.splitlines()[-1] == json.dumps({"type": "printf", "data": futex_bpf.END_LINE + "\n"})
    # the kernel frees a program after an RCU grace period once its last holder closed it
    deadline = time.monotonic() + 5
    while any(loaded(program_id) for program_id in held) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(loaded(program_id) for program_id in held), "a program is still loaded"

    lines = output.splitlines()
    counts = read_futex_counts(lines)
    events = read_events(lines)
    assert counts.complete and events.complete and events.lost_events == 0
    workers = [tid for tid, stats in counts.threads.items() if stats.waits >= 100]
    assert len(workers) == 3, {tid: (s.waits, s.wakes) for tid, s in counts.threads.items()}
    futex_episodes = [e for e in events.episodes if e.kind == 2 and e.tid in workers]
    # a handed-on token wakes the next worker: most of its waits sleep and are woken by another worker
    assert len(futex_episodes) >= 100 and sum(e.waker in workers for e in futex_episodes) >= 100
    sleeper = [e for e in events.episodes if e.kind == 3 and e.in_ns and e.in_ns - e.out_ns > 0.25e9]
    assert sleeper and sleeper[0].tid == child.pid      # the main thread's time.sleep(0.3): "other"
    assert all(events.window[0] <= e.in_ns <= events.window[1] for e in events.episodes if e.in_ns)

