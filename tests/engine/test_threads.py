"""The thread policy: affinity, cgroup quotas (v2 and v1), OMP_NUM_THREADS, torchrun,
and explicit counts; the cgroup files are fakes in tmp_path."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from sruc.engine import threads
from sruc.errors import SrucWarning, UsageError


def cgroup_v2(tmp_path: Path, cpu_max: dict[str, str], own: str = "/") -> tuple[Path, Path]:
    """A fake cgroup v2 tree: ``cpu.max`` per folder (relative to the root), and the
    ``/proc/self/cgroup`` line that puts this process at ``own``."""
    root = tmp_path / "cgroup"
    root.mkdir()
    for rel, text in cpu_max.items():
        folder = root / rel
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(text + "\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def cgroup_v1(tmp_path: Path, quota: str, period: str = "100000") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    folder = root / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text(quota + "\n")
    (folder / "cpu.cfs_period_us").write_text(period + "\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    return root, proc


@pytest.fixture
def cpus(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The affinity mask's size, set by the test (8 CPUs unless changed)."""
    count = [8]
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(count[0])))
    return count


@pytest.mark.parametrize(
    ("cpu_max", "own", "expected"),
    [
        ({"": "max 100000"}, "/", 8),  # no quota: the affinity
        ({"": "200000 100000"}, "/", 2),  # a container of 2 CPUs
        ({"": "150000 100000"}, "/", 1),  # 1.5 CPUs: rounded down
        ({"": "50000 100000"}, "/", 1),  # half a CPU: still one thread
        ({"": "1600000 100000"}, "/", 8),  # a quota above the affinity: the affinity
        ({"": "max 100000", "a": "300000 100000", "a/b": "max 100000"}, "/a/b", 3),  # a parent's
        ({"": "max", "a": "400000 100000"}, "/elsewhere", 8),  # not this process's cgroup
        ({"": "garbage"}, "/", 8),
    ],
)
def test_cgroup_v2_quota_caps_the_affinity(
    tmp_path: Path, cpus: list[int], cpu_max: dict[str, str], own: str, expected: int
) -> None:
    root, proc = cgroup_v2(tmp_path, cpu_max, own)
    assert threads.available_cpus(root, proc) == expected


@pytest.mark.parametrize(
    ("quota", "period", "expected"), [("-1", "100000", 8), ("200000", "100000", 2), ("x", "1", 8)]
)
def test_cgroup_v1_quota_caps_the_affinity(
    tmp_path: Path, cpus: list[int], quota: str, period: str, expected: int
) -> None:
    root, proc = cgroup_v1(tmp_path, quota, period)
    assert threads.available_cpus(root, proc) == expected


def test_affinity_alone_without_cgroups(tmp_path: Path, cpus: list[int]) -> None:
    cpus[0] = 3  # e.g. taskset -c 0-2
    assert threads.available_cpus(tmp_path / "none", tmp_path / "none") == 3
    assert threads.default_threads({}, tmp_path / "none", tmp_path / "none", idle=None) == 3


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OMP_NUM_THREADS": "1"}, 1),
        ({"OMP_NUM_THREADS": "12"}, 12),  # the user's word, even above the CPUs
        ({"OMP_NUM_THREADS": "3,2"}, 3),  # OpenMP's nested list: the outer level
        ({"OMP_NUM_THREADS": "0"}, 2),  # not a count: the policy
        ({"OMP_NUM_THREADS": "many"}, 2),
        ({"OMP_NUM_THREADS": ""}, 2),
        # torchrun with 2 processes per machine (it sets OMP_NUM_THREADS=1 itself,
        # unless the user set it; here neither): the CPUs shared out
        ({"WORLD_SIZE": "4", "RANK": "1", "LOCAL_WORLD_SIZE": "2"}, 1),
        ({"WORLD_SIZE": "2", "RANK": "0"}, 1),  # no LOCAL_WORLD_SIZE: all on this machine
        ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_WORLD_SIZE": "1"}, 2),  # one per machine
        ({"WORLD_SIZE": "8", "RANK": "0", "LOCAL_WORLD_SIZE": "8"}, 1),  # never below 1
        ({"WORLD_SIZE": "2", "RANK": "0", "OMP_NUM_THREADS": "2"}, 2),
    ],
)
def test_default_threads(
    tmp_path: Path, cpus: list[int], env: dict[str, str], expected: int
) -> None:
    root, proc = cgroup_v2(tmp_path, {"": "200000 100000"})
    assert threads.default_threads(env, root, proc, idle=None) == expected


@pytest.mark.parametrize(
    ("machine", "load", "idle"),
    [(2, 0.05, 2), (2, 1.0, 1), (2, 1.4, 1), (2, 0.6, 1), (2, 0.4, 2), (2, 7.0, 1),
     (64, 50.0, 14), (8, 0.0, 8)],
)  # fmt: skip
def test_idle_cpus_are_the_machine_less_its_load(machine: int, load: float, idle: int) -> None:
    assert threads.idle_cpus(machine, load) == idle


def test_the_default_leaves_the_cores_other_jobs_keep_busy(
    tmp_path: Path, cpus: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2-CPU process on a machine where another job keeps a core busy runs one thread;
    a busy big host does not lower a small quota it can still meet; the user's word wins."""
    root, proc = cgroup_v2(tmp_path, {"": "200000 100000"})  # 2 CPUs
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "_load_average", lambda: 1.05)
    assert threads.default_threads({}, root, proc) == 1
    assert threads.default_threads({"OMP_NUM_THREADS": "2"}, root, proc) == 2
    monkeypatch.setattr(threads, "_load_average", lambda: 0.1)
    assert threads.default_threads({}, root, proc) == 2
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(threads, "_load_average", lambda: 40.0)
    assert threads.default_threads({}, root, proc) == 2
    monkeypatch.setattr(threads, "_load_average", lambda: None)  # no load average (Windows)
    assert threads.default_threads({}, root, proc) == 2


@pytest.mark.parametrize("value", [0, -1, 2.5, "x", "", True, None, "1e3"])
def test_a_bad_count_is_a_usage_error(value: object) -> None:
    with pytest.raises(UsageError, match="threads must be"):
        threads.check_threads(value)


@pytest.mark.parametrize(("value", "expected"), [(1, 1), ("3", 3), (" 2 ", 2), (4.0, 4)])
def test_a_good_count(value: object, expected: int) -> None:
    assert threads.check_threads(value) == expected


@pytest.mark.usefixtures("keep_threads")
def test_use_threads_sets_torch_and_clamps_once_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert threads.use_threads(1) == 1 and torch.get_num_threads() == 1
    with pytest.warns(SrucWarning, match="8 threads asked for, but this process may use 2"):
        assert threads.use_threads(8) == 2
    assert torch.get_num_threads() == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert threads.use_threads(8) == 2  # said once
        assert threads.use_threads() == 2  # None keeps the count chosen


@pytest.mark.usefixtures("keep_threads")
def test_the_default_is_applied_once(monkeypatch: pytest.MonkeyPatch) -> None:
    threads._chosen = None
    calls: list[int] = []

    def fake_default() -> int:
        calls.append(1)
        return 1

    monkeypatch.setattr(threads, "default_threads", fake_default)
    assert threads.use_threads() == 1 and threads.use_threads() == 1
    assert calls == [1] and torch.get_num_threads() == 1


@pytest.mark.usefixtures("keep_threads")
def test_upscaler_and_train_config_take_threads(rgb_png: Path) -> None:
    import sruc
    from sruc.train import TrainConfig

    with pytest.raises(UsageError, match="threads must be at least 1"):
        sruc.Upscaler("bicubic", threads=0)
    sruc.Upscaler("bicubic", threads=1).upscale(rgb_png, 2)
    assert torch.get_num_threads() == 1
    assert TrainConfig(data="d", out="o", threads=1).threads == 1
