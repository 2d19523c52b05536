"""The data an evaluation replays and scores with: the data set in the wire format, in time
order, and the item vectors (the pipeline's encoder and item-text template)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recstream.config.settings import Settings
from recstream.models.errors import DatasetError

#: Size of the synthetic world `recstream eval --dataset synthetic` generates.
SYNTHETIC_DEFAULTS = {"n_items": 500, "n_users": 100, "events_per_user": 100}


@dataclass
class EvalData:
    """A data set in the wire format, in replay (time) order."""

    name: str
    items: list[dict[str, Any]]
    events: list[dict[str, Any]]
    views_are_targets: bool
    synthetic: Any = None  # SyntheticDataset for synthetic data


def load_data(dataset: str, limit: int | None, seed: int) -> EvalData:
    """`synthetic` (the generator with SYNTHETIC_DEFAULTS and `seed`) or a MovieLens folder.

    `limit` keeps the first `limit` events in time order; the catalogue is always whole.
    """
    if dataset == "synthetic":
        from recstream.evaluation.synthetic import SyntheticConfig, generate

        data = generate(SyntheticConfig(seed=seed, **SYNTHETIC_DEFAULTS))  # type: ignore[arg-type]
        events = [dict(e) for e in data.events]
        if limit is not None:
            events = events[:limit]
        # Synthetic views are drawn from the user's interest exactly like clicks: positives.
        return EvalData("synthetic", [dict(i) for i in data.items], events, True, data)
    from recstream.evaluation.movielens import load_movielens

    path = Path(dataset)
    if not path.exists():
        raise DatasetError(f"no such data set folder: {path} (or pass 'synthetic')")
    ml_items, ml_events = load_movielens(path, limit=limit)
    # MovieLens "view" is a middling 2.5–3.5 star rating, not a positive consumption.
    return EvalData(path.name, [dict(i) for i in ml_items], [dict(e) for e in ml_events], False)


def item_vectors(
    settings: Settings,
    items: Sequence[Mapping[str, Any]],
    worker_caches: Sequence[Path],
    encoder_factory: Callable[[Settings], Any],
    write_cache: Path | None = None,
) -> tuple[dict[str, np.ndarray] | None, str]:
    """Item id → unit vector with the pipeline's encoder and item-text template.

    `encoder_factory(settings)` builds the encoder the workers use (the caller passes the
    live path's factory: this package does not import recstream.agents).

    Vectors the workers already computed are read from their embedding caches (RocksDB, key
    `text_key(model_id, text)`, float32 bytes) so the catalogue is not encoded twice; the rest
    are encoded here and, with `write_cache`, stored there (the same layout) for the next run.
    Returns (vectors or None, a sentence for the report).
    """
    try:
        from recstream.models.item_text import item_text, text_key

        encoder = encoder_factory(settings)
    except Exception as exc:  # any failure means: no encoder, skip the baseline
        return None, f"the text encoder could not be loaded ({exc!r})"

    texts = {
        str(i["item_id"]): item_text(
            i.get("title"),
            i.get("categories"),
            i.get("text"),
            i.get("attributes"),
            settings.item_text_attributes,
        )
        for i in items
    }
    keys = {item: text_key(encoder.model_id, text) for item, text in texts.items()}
    vectors: dict[str, np.ndarray] = {}
    for cache in worker_caches:
        if not cache.is_dir():
            continue
        try:
            from rocksdict import AccessType, Rdict

            db = Rdict(str(cache), access_type=AccessType.read_only())
        except Exception:  # an unreadable cache only costs encoding time
            continue
        try:
            for item, key in keys.items():
                if item not in vectors:
                    raw = db.get(key.encode("utf-8"))
                    if raw is not None:
                        vectors[item] = np.frombuffer(raw, dtype=np.float32)
        finally:
            db.close()
    from_cache = len(vectors)
    todo = [item for item in texts if item not in vectors and texts[item]]
    if todo:
        encoded, valid = encoder.encode_with_mask([texts[i] for i in todo])
        for item, vec, ok in zip(todo, encoded, valid, strict=True):
            if ok:
                vectors[item] = vec
        if write_cache is not None:
            _store(write_cache, {keys[i]: vectors[i] for i in todo if i in vectors})
    source = (
        f"{encoder.model_id}: {from_cache} item vectors read from the workers' embedding cache, "
        f"{len(todo)} encoded here; {len(items) - len(vectors)} items without text"
    )
    return (vectors or None), source


def _store(cache: Path, vectors: Mapping[str, np.ndarray]) -> None:
    """Write key → float32 vector into a RocksDB embedding cache (created if missing)."""
    from rocksdict import Rdict

    cache.parent.mkdir(parents=True, exist_ok=True)
    db = Rdict(str(cache))
    try:
        for key, vec in vectors.items():
            db[key.encode("utf-8")] = np.asarray(vec, dtype=np.float32).tobytes()
    finally:
        db.close()
