"""Independent evaluation jobs (in-process replays, baselines, scoring) on several cores.

An evaluation is a handful of jobs that share nothing but their read-only inputs: the run
under test, its fixed-weights and ablation twins, each baseline. They are CPU-bound pure
Python, so threads would serialise on the GIL; each job runs in a forked worker process
instead. Forking shares the inputs (events, item vectors) copy-on-write, so the jobs are
plain closures, never pickled; only their results travel back (pickled).

Invariant: a job's result does not depend on where it ran (jobs share no mutable state and
seed their own randomness), so any number of workers gives the same metrics. One job feeds
others: the shared sequence-model trainer writes snapshots that the in-process replays wait
for (evaluation/model_schedule.py). Jobs start in the order given, so it goes first: with
several workers it is running before any replay waits, with one it has finished.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from recstream.models.errors import JobFailed, RecstreamError

T = TypeVar("T")

#: The jobs of the running `run_jobs` call, by name: a forked worker finds its job here (it
#: inherits the parent's memory), so only the name crosses the process boundary.
_JOBS: dict[str, Callable[[], Any]] = {}


def _run_named(name: str) -> tuple[Any, float]:
    """A job, in a forked worker."""
    torch = sys.modules.get("torch")
    if torch is not None:
        # The parent's intra-op (OpenMP) pool does not survive the fork: the child's first
        # parallel op would wait on threads that do not exist. One thread per job re-creates
        # no pool, and one job per core is the plan anyway (the sequence model trains here).
        torch.set_num_threads(1)
    started = time.perf_counter()
    return _JOBS[name](), time.perf_counter() - started


def run_jobs(
    jobs: Mapping[str, Callable[[], T]],
    workers: int,
    on_done: Callable[[str, float], None] | None = None,
) -> dict[str, T]:
    """Run every job once; name → its result, in the order of `jobs`.

    workers: processes (≤ 1, or a single job: in this process, in order). Jobs start in the
    order given, so put the longest first. on_done(name, wall seconds) is called in this
    process as each job ends. A job's exception is re-raised as JobFailed naming the job.
    """
    if workers <= 1 or len(jobs) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return {name: _timed_here(name, job, on_done) for name, job in jobs.items()}
    if _JOBS:
        raise JobFailed("run_jobs does not nest")
    _JOBS.update(jobs)
    try:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)), mp_context=multiprocessing.get_context("fork")
        ) as pool:
            futures = {pool.submit(_run_named, name): name for name in jobs}
            try:
                done = _collect(futures, on_done)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # do not wait for the rest
                raise
    finally:
        _JOBS.clear()
    return {name: done[name] for name in jobs}


def _timed_here(name: str, job: Callable[[], T], on_done: Callable[[str, float], None] | None) -> T:
    started = time.perf_counter()
    try:
        out = job()
    except RecstreamError:
        raise
    except Exception as exc:
        raise JobFailed(f"evaluation job {name!r} failed: {exc!r}") from exc
    if on_done is not None:
        on_done(name, time.perf_counter() - started)
    return out


def _collect(
    futures: dict[Future[tuple[Any, float]], str], on_done: Callable[[str, float], None] | None
) -> dict[str, Any]:
    done: dict[str, Any] = {}
    pending = set(futures)
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            name = futures[future]
            try:
                done[name], wall = future.result()
            except RecstreamError:
                raise
            except BrokenProcessPool as exc:
                raise JobFailed(f"the worker process of job {name!r} died: {exc}") from exc
            except Exception as exc:
                raise JobFailed(f"evaluation job {name!r} failed: {exc!r}") from exc
            if on_done is not None:
                on_done(name, wall)
    return done
