"""The eval's kept embedding cache survives two replays that keep it at the same time."""

from __future__ import annotations

import threading
from pathlib import Path

from recstream.evaluation.replay import (
    WORKER_EMBEDDING_CACHE,
    _keep_embedding_cache,
    _seed_embedding_cache,
)


def _worker_cache(root: Path, name: str, files: int) -> Path:
    """A stopped worker's data dir whose cache holds `files` files tagged `name`."""
    cache = root / name / WORKER_EMBEDDING_CACHE
    cache.mkdir(parents=True)
    for n in range(files):
        (cache / f"{n:03d}.sst").write_text(f"{name} {n}\n" * 200)
    return root / name


def _keep_together(workers: list[Path], kept: Path) -> list[BaseException]:
    """Each worker's cache kept from its own thread, all released at once; their errors."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(workers))

    def keep(data_dir: Path) -> None:
        try:
            start.wait()
            _keep_embedding_cache(data_dir, kept)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=keep, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_two_replays_keeping_the_cache_at_once_leave_one_whole_copy(tmp_path: Path) -> None:
    workers = [_worker_cache(tmp_path, name, 60) for name in ("a", "b")]
    kept = tmp_path / "eval-cache" / "embedding-cache"
    for _ in range(5):
        errors = _keep_together(workers, kept)
        assert not errors, errors
        contents = {p.read_text().split()[0] for p in kept.iterdir()}
        assert len(contents) == 1, "the kept cache mixes two workers' files"
        assert len(list(kept.iterdir())) == 60
        assert not kept.with_name(kept.name + ".tmp").exists()


def test_a_new_worker_starts_from_the_kept_cache(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    _keep_embedding_cache(_worker_cache(tmp_path, "a", 3), kept)
    fresh = tmp_path / "w0"
    _seed_embedding_cache(kept, fresh)
    copied = sorted(p.name for p in (fresh / WORKER_EMBEDDING_CACHE).iterdir())
    assert copied == ["000.sst", "001.sst", "002.sst"]
