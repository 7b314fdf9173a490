"""cgroup CPU limits: real groups on this machine, plus the file formats of the
hierarchy this machine does not use for cpu."""
import os
import subprocess
import sys
import time

import pytest

from ortprof import cgroup
from ortprof.errors import InputError

from nobody import SYSTEM_PYTHON, unprivileged_prefix

HIERARCHY = cgroup.cpu_hierarchy()
needs_cpu_cgroup = pytest.mark.skipif(HIERARCHY is None, reason="no cgroup cpu controller mounted")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups needs root")

BUSY_CHILD = """
import time
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    pass
print(time.process_time())
"""


def group_names(parent):
    return {name for name in os.listdir(parent) if name.startswith(cgroup.GROUP_PREFIX)}


@needs_cpu_cgroup
def test_this_process_is_found_in_the_cpu_hierarchy():
    directory = cgroup.process_cgroup_dir()
    assert directory is not None and directory.startswith(HIERARCHY.mountpoint)
    assert os.path.isdir(directory)
    limit = cgroup.process_cpu_limit()
    assert limit["version"] == HIERARCHY.version == cgroup.cgroup_version()
    assert limit["path"] == directory
    assert limit["cpus"] is None or limit["cpus"] > 0
    stat = cgroup.cpu_stat()
    assert set(stat) >= {"nr_periods", "nr_throttled", "throttled_usec"}
    assert all(isinstance(stat[key], int) for key in ("nr_periods", "nr_throttled", "throttled_usec"))


def test_missing_process_gives_none_not_an_exception():
    assert cgroup.process_cpu_limit(2 ** 22 + 1) is None
    assert cgroup.cpu_stat(2 ** 22 + 1) is None


@needs_cpu_cgroup
@needs_root
@pytest.mark.live
def test_limited_group_throttles_a_busy_child_to_its_quota():
    parent = cgroup.process_cgroup_dir()
    before = group_names(parent)
    with cgroup.LimitedCgroup(0.1, "throttle-test") as group:
        path = group.path
        assert os.path.isdir(path)
        child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD.format(seconds=1.5)],
                                 stdout=subprocess.PIPE, text=True, preexec_fn=group.add_self)
        time.sleep(0.3)
        assert group.pids() == [child.pid]
        limit = cgroup.process_cpu_limit(child.pid)
        assert limit["cpus"] == pytest.approx(0.1) and limit["limited_by"] == path
        cpu_seconds = float(child.communicate(timeout=30)[0])
        stat = group.stat()
    # 1.5 s of wall time at 0.1 CPU: ~0.15 s of CPU (interpreter start-up included)
    assert 0.05 < cpu_seconds < 0.35, cpu_seconds
    assert stat["nr_throttled"] >= 5 and stat["throttled_usec"] > 500_000, stat
    assert not os.path.exists(path)
    assert group_names(parent) == before


@needs_cpu_cgroup
@needs_root
@pytest.mark.live
def test_remove_moves_live_processes_back_and_survives_exceptions():
    home = cgroup.process_cgroup_dir()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with cgroup.LimitedCgroup(0.5, "leftover") as group:
                group.add(child.pid)
                path = group.path
                assert cgroup.process_cgroup_dir(child.pid) == path
                raise RuntimeError("boom")
        assert not os.path.exists(path)
        assert child.poll() is None                     # still running ...
        assert cgroup.process_cgroup_dir(child.pid) == home   # ... back where it came from
    finally:
        child.kill()
        child.wait()


@needs_cpu_cgroup
@needs_root
@pytest.mark.live
def test_adding_a_dead_pid_is_an_input_error():
    dead = subprocess.Popen(["true"])
    dead.wait()
    with cgroup.LimitedCgroup(0.5, "dead") as group:
        with pytest.raises(InputError, match=f"no process with pid {dead.pid}"):
            group.add(dead.pid)


@needs_cpu_cgroup
@needs_root
@pytest.mark.live
def test_groups_left_by_a_killed_ortprof_are_removed_next_time():
    dead = subprocess.Popen(["true"])
    dead.wait()
    parent = cgroup.process_cgroup_dir()
    stale = os.path.join(parent, f"{cgroup.GROUP_PREFIX}{dead.pid}-1-crashed")
    os.mkdir(stale)
    try:
        with cgroup.LimitedCgroup(1, "fresh"):
            assert not os.path.exists(stale)
    finally:
        if os.path.exists(stale):
            os.rmdir(stale)


@pytest.mark.parametrize("cpus", [0, -1, "lots"])
def test_bad_cpus_value_is_an_input_error(cpus):
    with pytest.raises(InputError, match="--cpus"):
        cgroup.LimitedCgroup(cpus, "bad")


def test_tiny_quota_is_raised_to_the_kernel_minimum():
    assert cgroup.LimitedCgroup(0.001, "tiny").quota_us == cgroup.MIN_QUOTA_US
    assert cgroup.LimitedCgroup(2.5, "big").quota_us == 250_000


@needs_root
def test_a_v2_tree_without_the_cpu_controller_is_refused_clearly():
    unified = [m for m in cgroup.cgroup_mounts() if m.version == 2 and not m.has_cpu]
    if not unified:
        pytest.skip("no cgroup v2 tree without the cpu controller on this machine")
    with pytest.raises(cgroup.CgroupProblem) as caught:
        cgroup.LimitedCgroup(0.5, "v2", hierarchy=unified[0]).create()
    message = str(caught.value)
    assert "cpu controller" in message and unified[0].mountpoint in message
    assert "docker run --cpus" in caught.value.fix
    assert "\n" not in message


@needs_cpu_cgroup
@needs_root
def test_probe_creates_and_removes_a_group():
    parent = cgroup.process_cgroup_dir()
    before = group_names(parent)
    ok, reason = cgroup.can_create_limited_group()
    assert ok, reason
    assert f"v{HIERARCHY.version}" in reason
    assert group_names(parent) == before


def unprivileged_python():
    """argv prefix running the system Python as `nobody` with ortprof importable, or skip."""
    return [*unprivileged_prefix(), SYSTEM_PYTHON]


@needs_cpu_cgroup
@pytest.mark.live
def test_unprivileged_user_gets_one_line_with_the_fix():
    script = ("from ortprof import cgroup\n"
              "try:\n"
              "    cgroup.LimitedCgroup(0.5, 'nobody').create()\n"
              "except cgroup.CgroupProblem as exc:\n"
              "    print(type(exc).__name__, exc.exit_code, exc)\n")
    done = subprocess.run([*unprivileged_python(), "-c", script], capture_output=True, text=True,
                          timeout=60, cwd="/tmp")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("CgroupProblem 4 cannot create cgroup"), line
    assert "permission denied" in line and "run ortprof as root" in line
    assert "\n" not in line


# -- file formats ---------------------------------------------------------------------
def write_files(directory, files):
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return str(directory)


def test_cpu_stat_normalises_v1_nanoseconds_and_v2_microseconds(tmp_path):
    v1 = write_files(tmp_path / "v1", {
        "cpu.stat": "nr_periods 17\nnr_throttled 16\nthrottled_time 1439242000\nnr_bursts 0\nburst_time 0\n"})
    v2 = write_files(tmp_path / "v2", {
        "cpu.stat": "usage_usec 171000\nuser_usec 170000\nsystem_usec 1000\nnr_periods 17\n"
                    "nr_throttled 16\nthrottled_usec 1439242\nnr_bursts 0\nburst_usec 0\n"})
    expected = {"nr_periods": 17, "nr_throttled": 16, "throttled_usec": 1439242}
    assert cgroup.cpu_stat(v1) == expected
    assert cgroup.cpu_stat(v2) == dict(expected, usage_usec=171000)


def test_read_cpu_limit_both_versions(tmp_path):
    def limit(name, version, files):
        return cgroup.read_cpu_limit(write_files(tmp_path / name, files), version)

    assert limit("a", 2, {"cpu.max": "max 100000\n"}) == (None, 100000)
    assert limit("b", 2, {"cpu.max": "50000 100000\n"}) == (50000, 100000)
    assert limit("c", 1, {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"}) == (None, 100000)
    assert limit("d", 1, {"cpu.cfs_quota_us": "10000\n", "cpu.cfs_period_us": "100000\n"}) == (10000, 100000)
    assert cgroup.read_cpu_limit(str(tmp_path / "missing"), 2) == (None, None)


def test_mountinfo_parsing_and_namespaced_paths(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
        "41 31 0:38 /docker/abc /sys/fs/cgroup/my\\040unified ro,relatime - cgroup2 cgroup2 rw\n")
    mounts = cgroup.cgroup_mounts(str(mountinfo))
    assert [(m.version, m.mountpoint) for m in mounts] == [
        (1, "/sys/fs/cgroup/cpu,cpuacct"), (1, "/sys/fs/cgroup/systemd"), (2, "/sys/fs/cgroup/my unified")]
    cpu = cgroup.cpu_hierarchy(mounts)
    assert cpu.controllers == ("cpu", "cpuacct") and cpu.version == 1
    assert cgroup.cgroup_layout(mounts) == "hybrid"
    assert cgroup.cgroup_version(mounts) == 1
    assert cpu.directory("/user.slice/session-1.scope") == "/sys/fs/cgroup/cpu,cpuacct/user.slice/session-1.scope"
    namespaced = mounts[2]
    assert namespaced.read_only and namespaced.root == "/docker/abc"
    assert namespaced.directory("/docker/abc/app") == "/sys/fs/cgroup/my unified/app"
    assert namespaced.directory("/elsewhere") is None
