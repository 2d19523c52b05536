"""Loading and creating per-user state with the parameters taken from Settings."""

from __future__ import annotations

import hashlib

from recstream.config.settings import Settings
from recstream.models.interest_state import InterestParams, InterestState


def interest_params(settings: Settings) -> InterestParams:
    return InterestParams(
        dedupe_capacity=settings.dedupe_capacity,
        max_consumed=settings.max_consumed,
    )


def load_user_state(raw: bytes | None, params: InterestParams) -> InterestState:
    """The stored state, or a fresh one for a user never seen."""
    if raw is None:
        return InterestState(params)
    return InterestState.from_bytes(raw, params)


def top_interests(state: InterestState, at_ts: float, n: int) -> list[dict[str, float | str]]:
    """The user's `n` strongest categories by decayed evidence, with their shares."""
    evidence = {c: m for c, m in state.evidence(at_ts).items() if m > 0}
    total = sum(evidence.values())
    if total <= 0:
        return []
    best = sorted(evidence.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{"category": c, "share": m / total} for c, m in best]


def user_summary(state: InterestState) -> dict[str, object]:
    """A JSON-able view of a user's state (GET /users/{user_id})."""
    blob = state.to_bytes()
    return {
        "event_count": state.event_count,
        "last_ts": state.last_ts,
        "last_event_id": state.last_event_id,
        "top_interests": top_interests(state, state.last_ts, 10),
        "state_bytes": len(blob),
        # Equal digests mean byte-identical state (restart and recovery checks use it).
        "digest": hashlib.sha256(blob).hexdigest(),
    }
