"""The CPU budget: affinity and the cgroup quota, whichever is smaller."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recstream.models.cpu_budget import quota_cpus, usable_cpus


def _write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("cpu_max", "want"),
    [("max 100000", None), ("150000 100000", 2), ("100000 100000", 1), ("50000 100000", 1),
     ("400000 100000", 4), ("garbage", None), ("0 100000", None)],
)  # fmt: skip
def test_cgroup_v2_quota_is_rounded_up_to_whole_cpus(
    tmp_path: Path, cpu_max: str, want: int | None
) -> None:
    _write(tmp_path, "cpu.max", cpu_max)
    assert quota_cpus(tmp_path) == want


def test_cgroup_v1_quota_and_its_no_limit_value(tmp_path: Path) -> None:
    _write(tmp_path, "cpu/cpu.cfs_quota_us", "250000")
    _write(tmp_path, "cpu/cpu.cfs_period_us", "100000")
    assert quota_cpus(tmp_path) == 3
    _write(tmp_path, "cpu/cpu.cfs_quota_us", "-1")
    assert quota_cpus(tmp_path) is None


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert quota_cpus(tmp_path) is None
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_the_smaller_of_affinity_and_quota_counts(tmp_path: Path) -> None:
    allowed = len(os.sched_getaffinity(0))
    _write(tmp_path, "cpu.max", "100000 100000")
    assert usable_cpus(tmp_path) == 1
    _write(tmp_path, "cpu.max", f"{(allowed + 8) * 100000} 100000")
    assert usable_cpus(tmp_path) == allowed  # a quota above the CPUs we may run on
