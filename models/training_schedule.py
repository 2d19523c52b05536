"""When the sequence model is retrained: one rule for the live trainer and the in-process
replay, so that both runners serve models trained on the same events.

A run is due once `min_events` events have been seen, then after every `every` new events,
and also whenever the events seen have grown to `growth` times those the last run trained
on: while the history is short each run sees twice the data of the one before (at 500,
1,000, 2,000, 4,000 events by default), so the first useful model arrives early instead of
after the first `every` events; later runs are `every` apart. Runs on little data cost
little (a run's cost is about linear in the events).
"""

from __future__ import annotations

from recstream.models.errors import ValidationError


def training_due(seen: int, trained: int, *, every: int, min_events: int, growth: float) -> bool:
    """Whether to train now, with `seen` events seen and the last run on `trained` of them
    (0: no run yet). every ≥ 1 events; growth ≤ 1 turns the growth rule off."""
    if every < 1 or min_events < 1:
        raise ValidationError(f"every and min_events must be >= 1, got {every}, {min_events}")
    if seen < min_events or seen <= trained:
        return False
    if trained == 0:
        return True
    return seen - trained >= every or (growth > 1.0 and seen >= growth * trained)
