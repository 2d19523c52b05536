"""The engine's hyperparameters as the settings give them: the one mapping both runners use.

The Kafka workers (agents/) and the in-process replay (evaluation/) build their engine from
the same function, so a setting means the same thing in both and their lists can agree.
"""

from __future__ import annotations

from typing import Any

from recstream.config.settings import Settings
from recstream.models.interest_state import InterestParams
from recstream.models.recommender import EngineParams
from recstream.models.sasrec import SasrecParams
from recstream.models.vocabulary import DEFAULT_EVENT_WEIGHTS


def interest_params(settings: Settings) -> InterestParams:
    weights = dict(DEFAULT_EVENT_WEIGHTS)
    weights["search"] = settings.text_weight
    return InterestParams(
        short_half_life_s=settings.short_half_life_s,
        long_half_life_s=settings.long_half_life_s,
        evidence_half_life_s=settings.evidence_half_life_s,
        dedupe_capacity=settings.dedupe_capacity,
        max_consumed=settings.max_consumed,
        event_weights=weights,
    )


def sasrec_params(settings: Settings) -> SasrecParams:
    """The sequence model's hyperparameters (the trainer's and the in-process replay's)."""
    s = settings
    return SasrecParams(
        dim=s.sasrec_dim, heads=s.sasrec_heads, layers=s.sasrec_layers, max_len=s.sasrec_max_len,
        epochs=s.sasrec_epochs, warm_epochs=s.sasrec_warm_epochs, loss_share=s.sasrec_loss_share,
        windows_per_user=s.sasrec_windows_per_user, batch_size=s.sasrec_batch_size,
    ).check()  # fmt: skip


def engine_params(settings: Settings, **overrides: Any) -> EngineParams:
    """EngineParams from `settings`; `overrides` replace single fields (e.g. eta=0.0)."""
    s = settings
    values: dict[str, Any] = {
        "interest": interest_params(s),
        "ranker": s.ranker,
        "k": s.top_k,
        "candidates_per_source": s.candidates_per_source,
        "mmr_trade_off": s.mmr_trade_off,
        "exploration_share": s.exploration_share,
        "posterior_alpha0": s.posterior_alpha0,
        "eta": s.eta,
        "eta_global": s.eta_global,
        "eta_tau": s.eta_tau,
        "weight_shrinkage": s.weight_shrinkage,
        "feedback_baseline": s.feedback_baseline,
        "feedback_temperature": s.feedback_temperature,
        "covisit_window_s": s.covisit_window_s,
        "covisit_half_life_s": s.covisit_half_life_s,
        "covisit_neighbours": s.covisit_neighbours,
        "covisit_recent": s.covisit_recent,
        "sequence_window_s": s.sequence_window_s,
        "sequence_steps": s.sequence_steps,
        "sequence_sources": s.sequence_sources,
        "sequence_gap_half_life_s": s.sequence_gap_half_life_s,
        "sequence_half_life_s": s.sequence_half_life_s,
        "sequence_neighbours": s.sequence_neighbours,
        "sequence_candidates": s.sequence_candidates,
        "sasrec_candidates": s.sasrec_candidates,
        "popularity_half_life_s": s.popularity_half_life_s,
        "freshness_half_life_s": s.freshness_half_life_s,
        "window_short_s": s.window_short_s,
        "window_short_step_s": s.window_short_step_s,
        "window_long_s": s.window_long_s,
        "window_long_step_s": s.window_long_step_s,
    }
    values.update(overrides)
    return EngineParams(**values)
