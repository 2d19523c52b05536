"""A user's state in human terms: served by GET /users/{user_id} and `recstream inspect user`."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from recstream.agents.embedding import EmbeddingRuntime
from recstream.agents.ranking import FusedRanker, UserRanking
from recstream.agents.state import top_interests
from recstream.models.interest_state import InterestState


def user_report(
    user_id: str,
    state: InterestState,
    ranking: UserRanking,
    runtime: EmbeddingRuntime,
    ranker: FusedRanker,
    top: int = 5,
) -> dict[str, Any]:
    """JSON-able report at the user's last event time (event time, not wall clock)."""
    at = state.last_ts
    blob = state.to_bytes()
    horizons: dict[str, list[dict[str, Any]]] = {}
    for horizon in ("short", "long"):
        vec = state.score_vector(horizon, at) if state.event_count else None
        items: list[dict[str, Any]] = []
        if vec is not None and runtime.index is not None and float(np.linalg.norm(vec)) > 0:
            for item_id, sim in runtime.index.search(vec, top):
                items.append({"item_id": item_id, "similarity": round(float(sim), 4)})
        horizons[horizon] = items
    posterior = ranker.posterior(state, at)
    categories: list[dict[str, Any]] = []
    entropy = None
    if posterior is not None:
        mean = posterior.mean()
        lo, hi = posterior.credible_interval(0.9)
        order = np.argsort(-mean)
        for i in order[: top * 2]:
            categories.append(
                {
                    "category": posterior.labels[int(i)],
                    "mean": round(float(mean[i]), 4),
                    "ci90": [round(float(lo[i]), 4), round(float(hi[i]), 4)],
                }
            )
        entropy = round(float(posterior.entropy()), 4)
    return {
        "user_id": user_id,
        "event_count": state.event_count,
        "last_ts": state.last_ts,
        "last_event_id": state.last_event_id,
        "top_items": horizons,
        "posterior": categories,
        "entropy_nats": entropy,
        "top_interests": top_interests(state, at, 10),
        "weights": dict(
            zip(
                ranker_names(),
                ranking.weights.weights.tolist(),
                strict=True,
            )
        ),
        "feedback_count": ranking.weights.n,
        "state_bytes": len(blob),
        # Equal digests mean byte-identical state (restart and recovery checks use it).
        "digest": hashlib.sha256(blob).hexdigest(),
    }


def ranker_names() -> tuple[str, ...]:
    from recstream.agents.ranking import NAMES

    return NAMES
