"""A user's state in human terms: served by GET /users/{user_id} and `recstream inspect user`."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from recstream.models.batch_signals import top_rows
from recstream.models.catalog import Catalog
from recstream.models.interest_posterior import DirichletPosterior
from recstream.models.recommender import SIGNAL_NAMES, EngineParams, top_interests
from recstream.models.user_record import UserRecord


def _nearest(catalog: Catalog | None, vec: np.ndarray, top: int) -> list[dict[str, Any]]:
    if catalog is None or not catalog.rows or float(np.linalg.norm(vec)) == 0:
        return []
    sims = catalog.vectors[: catalog.rows] @ (vec / np.linalg.norm(vec)).astype(np.float32)
    sims = np.where(
        catalog.alive[: catalog.rows] & catalog.has_vector[: catalog.rows], sims, -np.inf
    )
    return [
        {"item_id": catalog.ids[int(r)], "similarity": round(float(sims[r]), 4)}
        for r in top_rows(sims, top)
    ]


def _posterior(
    rec: UserRecord, catalog: Catalog | None, params: EngineParams, at: float
) -> DirichletPosterior | None:
    sizes = {c: len(r) for c, r in (catalog.category_rows() if catalog else {}).items()}
    total = sum(sizes.values())
    if not total:
        return None
    labels = sorted(sizes)
    prior = np.array([sizes[c] / total for c in labels])
    evidence = rec.interest.evidence(at) if rec.interest.event_count else {}
    return DirichletPosterior.from_evidence(
        evidence, labels, alpha0=params.posterior_alpha0, prior=prior
    )


def user_report(
    user_id: str,
    rec: UserRecord,
    catalog: Catalog | None,
    params: EngineParams,
    raw: bytes,
    top: int = 5,
) -> dict[str, Any]:
    """JSON-able report at the user's last event time (event time, not wall clock)."""
    state = rec.interest
    at = state.last_ts
    horizons = {
        h: _nearest(catalog, state.score_vector(h, at), top) if state.event_count else []
        for h in ("short", "long")
    }
    posterior = _posterior(rec, catalog, params, at)
    categories: list[dict[str, Any]] = []
    entropy = None
    if posterior is not None:
        mean = posterior.mean()
        lo, hi = posterior.credible_interval(0.9)
        for i in np.argsort(-mean)[: top * 2]:
            categories.append(
                {
                    "category": posterior.labels[int(i)],
                    "mean": round(float(mean[i]), 4),
                    "ci90": [round(float(lo[i]), 4), round(float(hi[i]), 4)],
                }
            )
        entropy = round(float(posterior.entropy()), 4)
    p = params
    return {
        "user_id": user_id,
        "event_count": state.event_count,
        "last_ts": state.last_ts,
        "last_event_id": state.last_event_id,
        "top_items": horizons,
        "posterior": categories,
        "entropy_nats": entropy,
        "top_interests": top_interests(state.evidence(at) if state.event_count else {}, 10),
        "weights": dict(zip(SIGNAL_NAMES, rec.weights.weights.tolist(), strict=True)),
        "feedback_count": rec.weights.n,
        "recent_items": [i for i, _ in rec.recent],
        "window_counts": {
            "at_ts": at,
            "short": rec.window_short.counts(at, p.window_short_s, p.window_short_step_s),
            "long": rec.window_long.counts(at, p.window_long_s, p.window_long_step_s),
        },
        "state_bytes": len(raw),
        # Equal digests mean byte-identical state (restart and recovery checks use it).
        "digest": hashlib.sha256(raw).hexdigest(),
    }
