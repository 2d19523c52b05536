"""The embedding stage on the real broker: items → batched encode → catalog vectors and index."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rs_harness import Topic, get_json

from recstream.agents.embedding import decode_vector
from recstream.config.settings import Settings
from recstream.evaluation.workers import WorkerProcess
from recstream.models.encoder import TextEncoder
from recstream.models.item_text import item_text


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


def item_record(
    item_id: str, title: str, text: str = "", categories: list[str] | None = None
) -> tuple[bytes, bytes]:
    body = {
        "item_id": item_id,
        "title": title,
        "text": text,
        "categories": categories or [],
        "ts": 1_700_000_000,
    }
    return item_id.encode(), json.dumps(body).encode()


def fetch(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def wait_item(
    worker: WorkerProcess, item_id: str, ok: Callable[[int, Any], bool], timeout_s: float = 90
) -> Any:
    deadline = time.monotonic() + timeout_s
    last: tuple[int, Any] = (0, None)
    while time.monotonic() < deadline:
        try:
            last = fetch(f"{worker.url}/items/{item_id}/")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            last = (0, None)
        if ok(*last):
            return last[1]
        assert worker.alive(), worker.log_tail()
        time.sleep(0.3)
    raise AssertionError(
        f"item {item_id} never reached the expected state; last {last}\n{worker.log_tail()}"
    )


def embedded(status: int, body: Any) -> bool:
    return status == 200 and bool(body.get("vec")) and bool(body.get("indexed"))


@pytest.fixture
def small_batches(run_settings: Settings) -> Iterator[Settings]:
    yield run_settings.model_copy(update={"embed_batch_size": 8, "embed_wait_s": 0.05})


def test_stage_vectors_equal_direct_encode_cache_update_and_tombstone(
    small_batches: Settings, topics: dict[str, Topic], tmp_path: Path, encoder: TextEncoder
) -> None:
    settings = small_batches
    data_dir = tmp_path / "embed"
    worker = WorkerProcess(settings, data_dir=data_dir, log_file=tmp_path / "embed.log").start()
    try:
        records = [
            item_record(f"m{n}", f"Movie {n}", f"a story about topic {n % 5}", [f"g{n % 3}"])
            for n in range(40)
        ]
        topics["items"].send(records)
        bodies = {f"m{n}": wait_item(worker, f"m{n}", embedded) for n in range(40)}
        # Vectors from the stage equal a direct encode of the documented item text.
        texts = [
            item_text(f"Movie {n}", [f"g{n % 3}"], f"a story about topic {n % 5}", {})
            for n in range(40)
        ]
        direct = encoder.encode(texts)
        for n in range(40):
            vec = decode_vector(bodies[f"m{n}"]["vec"])
            assert float(vec @ direct[n]) >= 0.999
            assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4
        stats = get_json(f"{worker.url}/stats/embedding/")
        assert stats["encoded"] == 40
        assert max(stats["batch_sizes"]) <= 8, "a micro-batch exceeded embed_batch_size"
        assert stats["index_size"] == 40

        # Re-sending unchanged items costs no encode (cache hit).
        topics["items"].send(records[:10])
        time.sleep(3)
        stats2 = get_json(f"{worker.url}/stats/embedding/")
        assert stats2["encoded"] == 40

        # An update with new text re-embeds; a tombstone removes the item everywhere.
        topics["items"].send(
            [item_record("m1", "Space opera", "galaxies and starships", ["scifi"])]
        )
        new = wait_item(
            worker,
            "m1",
            lambda s, b: s == 200 and b.get("categories") == ["scifi"] and bool(b.get("vec")),
        )
        want = encoder.encode([item_text("Space opera", ["scifi"], "galaxies and starships", {})])[
            0
        ]
        assert float(decode_vector(new["vec"]) @ want) >= 0.999
        topics["items"].send([(b"m2", None)])
        wait_item(worker, "m2", lambda s, b: s == 404)
        assert get_json(f"{worker.url}/stats/embedding/")["index_size"] == 39
    finally:
        assert worker.stop() == 0

    # A restarted worker with the same data dir finds every vector in its cache.
    worker = WorkerProcess(settings, data_dir=data_dir, log_file=tmp_path / "embed2.log").start()
    try:
        topics["items"].send(records[10:20])
        wait_item(worker, "m19", embedded)
        time.sleep(2)
        stats3 = get_json(f"{worker.url}/stats/embedding/")
        assert stats3["encoded"] == 0, "unchanged items were re-encoded after a restart"
    finally:
        worker.stop()


def test_awkward_texts_do_not_crash_the_stage(
    small_batches: Settings, topics: dict[str, Topic], tmp_path: Path
) -> None:
    worker = WorkerProcess(
        small_batches, data_dir=tmp_path / "w", log_file=tmp_path / "w.log"
    ).start()
    try:
        topics["items"].send(
            [
                item_record("blank", "\u200b\u200b", "   \t  "),  # nothing left after cleaning
                item_record("ctrl", "Tab\x01le\x07", "bell\x00and\x1fnull"),
                item_record("long", "Long", "word " * 20_000),
                item_record("uni", "Amélie — 東京", "ünïcödé ✓"),
                (b"bytes", b"\xff\xfe not utf-8"),
                item_record("after", "After the bad ones", "still processed"),
            ]
        )
        for item_id in ("ctrl", "uni", "after"):
            wait_item(worker, item_id, embedded)
        # Too long for the payload limit: a dead letter, not a crash.
        blank = wait_item(worker, "blank", lambda s, b: s == 200)
        assert blank.get("vec") is None  # no placeholder vector for an empty text
        dead = topics["dead_letters"].read_until(lambda r: len(r) >= 2, 60, worker=worker)
        reasons = " | ".join(d["reason"] for d in dead)
        assert "UTF-8" in reasons and "exceeds the limit" in reasons
        assert worker.alive()
    finally:
        worker.stop()
