"""Loading and creating per-user state with the parameters taken from Settings."""

from __future__ import annotations

from recstream.config.settings import Settings
from recstream.models.interest_state import DEFAULT_EVENT_WEIGHTS, InterestParams, InterestState


def interest_params(settings: Settings) -> InterestParams:
    weights = dict(DEFAULT_EVENT_WEIGHTS)
    weights["search"] = settings.text_weight
    return InterestParams(
        short_half_life_s=settings.short_half_life_s,
        long_half_life_s=settings.long_half_life_s,
        dedupe_capacity=settings.dedupe_capacity,
        max_consumed=settings.max_consumed,
        event_weights=weights,
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
