"""One shared trainer for every in-process replay of a run: the replays' lists and model
timelines are the ones each replay gets when it trains the sequence model itself."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recstream.config.settings import Settings
from recstream.evaluation.inprocess import build_catalog, replay_inprocess
from recstream.evaluation.model_schedule import SnapshotFeed, snapshot_path, train_ahead
from recstream.evaluation.synthetic import SyntheticConfig, generate
from recstream.models.errors import JobFailed

BATCH = 25


@pytest.fixture(scope="module")
def data() -> Any:
    return generate(SyntheticConfig(n_items=40, n_users=8, events_per_user=30, seed=2))


@pytest.fixture(scope="module")
def vectors(data: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for item in data.items:
        v = rng.standard_normal(384).astype(np.float32)
        out[str(item["item_id"])] = v / np.linalg.norm(v)
    return out


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(
        trainer_every_events=50, trainer_min_events=50, sasrec_epochs=1, sasrec_warm_epochs=1
    )


def _lists(res: Any) -> list[tuple[str | None, tuple[str, ...], int | None]]:
    return [(lst.event_id, lst.items, lst.model_version) for lst in res.lists]


def _timeline(res: Any) -> list[tuple[int, int, float]]:
    return [(m["version"], m["first_event"], m["loss"]) for m in res.models]


def test_replays_fed_by_one_trainer_match_replays_that_train(
    settings: Settings, data: Any, vectors: dict[str, np.ndarray], tmp_path: Path
) -> None:
    own = replay_inprocess(settings, data.items, data.events, vectors, batch_size=BATCH)
    assert len(own.models) >= 3  # the schedule trains several times on this slice
    catalog = build_catalog(data.items, vectors, 384)
    runs = train_ahead(settings, catalog, data.events, tmp_path, batch_size=BATCH)
    assert runs == len(own.models)
    assert (tmp_path / "done").read_text() == str(runs)
    for overrides in ({}, {"eta": 0.0, "eta_global": 0.0}):
        mine = replay_inprocess(
            settings, data.items, data.events, vectors, batch_size=BATCH, **overrides
        )
        fed = replay_inprocess(
            settings, data.items, data.events, vectors, batch_size=BATCH,
            feed=SnapshotFeed(tmp_path), **overrides,
        )  # fmt: skip
        assert _lists(fed) == _lists(mine)
        assert _timeline(fed) == _timeline(mine)
    assert _lists(mine) != _lists(own)  # the η rule off changes the lists, not the models


def test_a_feed_waits_for_a_snapshot_the_trainer_is_still_writing(
    settings: Settings, data: Any, vectors: dict[str, np.ndarray], tmp_path: Path
) -> None:
    catalog = build_catalog(data.items, vectors, 384)
    trainer = threading.Timer(
        0.3, train_ahead, (settings, catalog, data.events, tmp_path), {"batch_size": BATCH}
    )
    trainer.start()
    fed = replay_inprocess(
        settings, data.items, data.events, vectors, batch_size=BATCH,
        feed=(feed := SnapshotFeed(tmp_path)),
    )  # fmt: skip
    trainer.join()
    assert feed.waited_s >= 0.2
    assert fed.models and fed.models[0]["first_event"] == 50


def test_a_failed_trainer_stops_the_replays_it_feeds(
    settings: Settings, data: Any, vectors: dict[str, np.ndarray], tmp_path: Path
) -> None:
    catalog = build_catalog(data.items, vectors, 384)
    broken = [*data.events[:60], {"event_type": "view"}, *data.events[60:]]  # no user_id
    with pytest.raises(KeyError):
        train_ahead(settings, catalog, broken, tmp_path, batch_size=BATCH)
    assert "KeyError" in (tmp_path / "failed").read_text()
    assert snapshot_path(tmp_path, 50).exists()  # written before the bad event
    with pytest.raises(JobFailed, match="trainer failed: KeyError"):
        replay_inprocess(
            settings, data.items, data.events, vectors, batch_size=BATCH,
            feed=SnapshotFeed(tmp_path),
        )  # fmt: skip


def test_a_trainer_of_another_schedule_is_refused(
    settings: Settings, data: Any, vectors: dict[str, np.ndarray], tmp_path: Path
) -> None:
    catalog = build_catalog(data.items, vectors, 384)
    train_ahead(settings, catalog, data.events, tmp_path, batch_size=30)
    with pytest.raises(JobFailed, match="no model for the batch at 50"):
        replay_inprocess(
            settings, data.items, data.events, vectors, batch_size=BATCH,
            feed=SnapshotFeed(tmp_path),
        )  # fmt: skip
