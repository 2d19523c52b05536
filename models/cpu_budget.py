"""How many CPUs this process may keep busy: the one answer every thread pool sizes itself by.

``os.cpu_count()`` is the host's count. In a container (docker-compose sets ``cpus:``) the kernel
still shows every host CPU, and the limit is a CFS quota in the cgroup: a torch or ONNX Runtime
pool as wide as the host is throttled at the quota and its threads wait for each other at every
operator. So the budget is the smallest of the CPUs the scheduler lets us run on (affinity) and
the cgroup quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded up,
and at least 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["quota_cpus", "usable_cpus"]

_CGROUP = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path = _CGROUP) -> int:
    """CPUs this process may use: min(affinity, cgroup quota), at least 1."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        allowed = os.cpu_count() or 1
    quota = quota_cpus(cgroup_root)
    return max(1, min(allowed, quota) if quota is not None else allowed)


def quota_cpus(cgroup_root: Path = _CGROUP) -> int | None:
    """The cgroup's CPU quota in whole CPUs (quota / period, rounded up); None without one."""
    v2 = _read(cgroup_root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            return _ratio(parts[0], parts[1])
        return None
    quota = _read(cgroup_root / "cpu" / "cpu.cfs_quota_us") or _read(
        cgroup_root / "cpu.cfs_quota_us"
    )
    period = _read(cgroup_root / "cpu" / "cpu.cfs_period_us") or _read(
        cgroup_root / "cpu.cfs_period_us"
    )
    if quota is None or period is None:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> int | None:
    """ceil(quota / period); None for a quota that is not a positive number (-1: none)."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return math.ceil(q / p) if q > 0 and p > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
