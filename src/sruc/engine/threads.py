"""How many CPU threads torch runs on: the one policy, for every command and the API.

PyTorch's default is one thread per core of the machine. On a shared machine
that is too many: a container limited to 2 CPUs of a 64-core host, a process
pinned to some cores with ``taskset``, or several ``torchrun`` processes on one
machine each start a full team, and OpenMP teams with more threads than CPUs
wait on their slowest thread at every layer (training measured 71 patches/s
with two threads against 370-400 with one on a 2-core machine with one core
busy). The default here is what the process may really use:

1. ``OMP_NUM_THREADS`` when it is set to a positive whole number (the user's
   word; ``torchrun`` sets it to 1 for several processes per machine);
2. else the CPUs this process may run on (:func:`available_cpus`: its
   affinity mask, capped by the cgroup CPU quota), shared out between the
   processes ``torchrun`` started on this machine (``LOCAL_WORLD_SIZE``),
   and no more than the machine's CPUs that other jobs leave idle
   (:func:`idle_cpus`: the CPU count less the one-minute load average, as
   the process starts). A team of threads that waits on a core another job
   keeps busy runs slower than one thread: on a 2-core AMD EPYC with one core
   busy, two threads were 2.6x slower than one for ``sruc up`` and 2.1x for
   training (benchmarks/README.md, "Threads on a busy machine").

The load average looks back a minute: a job started seconds ago is not seen
yet, one that just ended still is. ``--threads N`` (or ``OMP_NUM_THREADS``)
always wins.

No torch import at module level: the CLI validates ``--threads`` with it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from sruc.engine.launch import torchrun
from sruc.errors import SrucWarning, UsageError

#: Where cgroup v2 (one hierarchy) or v1 (a folder per controller) is mounted.
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The file that names this process's cgroups.
PROC_CGROUP = Path("/proc/self/cgroup")
#: The environment variable OpenMP (and torch) read; honoured when set.
ENV_OMP = "OMP_NUM_THREADS"

_chosen: int | None = None  # the count set by use_threads, None until the first call
_warned: set[tuple[int, int]] = set()  # (asked, available) pairs already warned about


def _affinity_cpus() -> int:
    """CPUs in this process's affinity mask (every CPU where the OS has no masks)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """This process's cgroup path per controller: ``""`` for v2, ``cpu`` for v1's."""
    paths: dict[str, str] = {}
    try:
        text = proc_cgroup.read_text()
    except OSError:
        return paths
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(","):
            paths.setdefault(controller, parts[2])
    return paths


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _quota_v2(folder: Path) -> float | None:
    """CPUs allowed by ``cpu.max`` (``"200000 100000"`` is 2; ``"max 100000"`` none)."""
    text = _read(folder / "cpu.max")
    if text is None:
        return None
    parts = text.split()
    try:
        quota, period = (parts[0], float(parts[1])) if len(parts) == 2 else (parts[0], 100_000.0)
        return None if quota == "max" or period <= 0 else float(quota) / period
    except ValueError:
        return None


def _quota_v1(folder: Path) -> float | None:
    """CPUs allowed by ``cpu.cfs_quota_us / cpu.cfs_period_us`` (quota -1: none)."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        q, p = float(quota or ""), float(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _up_from(root: Path, rel: str) -> list[Path]:
    """``root/rel`` and each folder above it up to ``root`` (a parent's limit binds too)."""
    folders = [root]
    here = root
    for part in [p for p in rel.strip("/").split("/") if p and p != ".."]:
        here = here / part
        folders.append(here)
    return folders[::-1]


def cgroup_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (1.5 = one and a half), or None.

    cgroup v2's ``cpu.max`` and v1's ``cpu.cfs_quota_us``/``cpu.cfs_period_us``,
    read in this process's own cgroup and every one above it (the tightest
    wins). None where there is no quota (or no cgroups: macOS, Windows).
    """
    paths = _cgroup_paths(proc_cgroup)
    found: list[float] = []
    if "" in paths or (root / "cpu.max").exists():  # v2: one hierarchy
        found += [q for f in _up_from(root, paths.get("", "")) if (q := _quota_v2(f))]
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):  # v1: the cpu controller's folder
        if (root / mount).is_dir():
            rel = paths.get("cpu", "")
            found += [q for f in _up_from(root / mount, rel) if (q := _quota_v1(f))]
            break
    return min(found) if found else None


def available_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup quota.

    A fractional quota rounds down (1.5 CPUs: 1 thread; a team of 2 would be
    throttled half of each period), never below 1.
    """
    cpus = _affinity_cpus()
    quota = cgroup_cpus(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def _env_threads(env: Mapping[str, str]) -> int | None:
    """``OMP_NUM_THREADS`` as a positive count; None when unset or not one (OpenMP's
    own list form ``4,2`` takes its first number)."""
    text = env.get(ENV_OMP, "").split(",")[0].strip()
    try:
        n = int(text)
    except ValueError:
        return None
    return n if n >= 1 else None


def _load_average() -> float | None:
    """The machine's one-minute load average (None where the OS has none: Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def idle_cpus(machine_cpus: int | None = None, load: float | None = None) -> int | None:
    """CPUs of the whole machine that other jobs leave idle: its CPU count less the
    one-minute load average, rounded to the nearest whole CPU, at least 1; None where
    the load cannot be read. (Runnable and waiting jobs both count in the load.)"""
    machine = (os.cpu_count() or 1) if machine_cpus is None else machine_cpus
    load = _load_average() if load is None else load
    if load is None:
        return None
    return max(1, math.floor(machine - load + 0.5))


def default_threads(
    env: Mapping[str, str] | None = None,
    root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_CGROUP,
    idle: int | None = -1,
) -> int:
    """The thread count sruc uses when none is given (see the module's docstring).

    ``idle``: CPUs left idle by other jobs (-1: measure, :func:`idle_cpus`; None:
    do not look at the load)."""
    env = os.environ if env is None else env
    given = _env_threads(env)
    if given is not None:
        return given
    cpus = available_cpus(root, proc_cgroup)
    launch = torchrun(env)
    if launch is not None:
        cpus = max(1, cpus // launch.local_world)
    free = idle_cpus() if idle == -1 else idle
    return cpus if free is None else max(1, min(cpus, free))


def check_threads(value: object) -> int:
    """A thread count given by a person, as an int.

    Raises:
        UsageError: not a whole number, or below 1.
    """
    if isinstance(value, bool):
        raise UsageError(f"threads must be a whole number of at least 1, not {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise UsageError(
                f"threads must be a whole number of at least 1, not {value!r}"
            ) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise UsageError(f"threads must be a whole number of at least 1, not {value!r}")
    if value < 1:
        raise UsageError(f"threads must be at least 1, got {value}")
    return value


def use_threads(threads: int | None = None) -> int:
    """Set torch's CPU thread count for this process; return it.

    ``threads`` given: that many, checked (:func:`check_threads`); more than
    :func:`available_cpus` is lowered to it with one :class:`SrucWarning`,
    since more threads than CPUs only make each layer wait for the slowest.
    None: the :func:`default_threads` policy, applied once per process (a
    later None keeps whatever was set, by sruc or by an explicit count).
    Every sruc command and :class:`sruc.Upscaler` call this before running a
    model; call it yourself (``sruc.use_threads(1)``) to choose for all of them.

    Raises:
        UsageError: ``threads`` is not a whole number of at least 1.
    """
    global _chosen
    if threads is None:
        if _chosen is not None:
            return _chosen
        n = default_threads()
    else:
        n = check_threads(threads)
        cpus = available_cpus()
        if n > cpus:
            if (n, cpus) not in _warned:
                _warned.add((n, cpus))
                warnings.warn(
                    f"{n} threads asked for, but this process may use {cpus} CPU(s) "
                    f"(affinity and cgroup quota); using {cpus}",
                    SrucWarning,
                    stacklevel=2,
                )
            n = cpus
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _chosen = n
    return n


__all__ = [
    "CGROUP_ROOT",
    "ENV_OMP",
    "available_cpus",
    "cgroup_cpus",
    "check_threads",
    "default_threads",
    "idle_cpus",
    "use_threads",
]
