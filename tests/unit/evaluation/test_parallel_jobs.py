"""parallel_jobs: the same results in forked workers as in this process, and clear failures."""

from __future__ import annotations

import os
from functools import partial

import numpy as np
import pytest

from recstream.evaluation.parallel_jobs import run_jobs
from recstream.models.errors import JobFailed

DATA = np.random.default_rng(0).normal(size=(200, 50))


def _work(seed: int) -> tuple[int, float]:
    """Reads the parent's data (inherited, not pickled) and seeds its own randomness."""
    rng = np.random.default_rng(seed)
    return os.getpid(), float((DATA @ rng.normal(size=50)).sum())


def _fails() -> None:
    raise RuntimeError("boom")


def test_workers_give_the_results_of_one_process_in_job_order() -> None:
    jobs = {f"job{s}": partial(_work, s) for s in (3, 1, 2)}
    walls: list[str] = []
    here = run_jobs(jobs, 1, lambda name, wall: walls.append(name))
    forked = run_jobs(jobs, 2)
    assert list(forked) == ["job3", "job1", "job2"]
    assert {k: v[1] for k, v in forked.items()} == {k: v[1] for k, v in here.items()}
    assert {pid for pid, _ in here.values()} == {os.getpid()}
    assert os.getpid() not in {pid for pid, _ in forked.values()}
    assert walls == ["job3", "job1", "job2"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_is_named(workers: int) -> None:
    jobs = {"fine": partial(_work, 0), "broken": _fails}
    with pytest.raises(JobFailed, match=r"'broken'.*boom"):
        run_jobs(jobs, workers)
    assert run_jobs({"again": partial(_work, 1)}, workers)["again"][1] == _work(1)[1]


def _train_a_little() -> float:
    import torch

    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 64)
    loss = layer(torch.randn(256, 64)).pow(2).mean()
    loss.backward()
    big = torch.randn(600, 600)
    return float((big @ big).sum() + torch.nn.functional.gelu(torch.randn(1_000_000)).sum())


def test_torch_in_a_job_after_the_parent_used_its_thread_pool() -> None:
    """Forked after the parent ran torch's parallel ops (as encoding search texts does), a
    job's torch work must not wait forever on the parent's pool (it did, before)."""
    import torch

    big = torch.randn(600, 600)
    float((big @ big).sum() + torch.nn.functional.gelu(torch.randn(1_000_000)).sum())
    threads = torch.get_num_threads()
    out = run_jobs({"a": _train_a_little, "b": _train_a_little}, 2)
    assert out["a"] == out["b"]
    assert torch.get_num_threads() == threads  # the parent keeps its pool
