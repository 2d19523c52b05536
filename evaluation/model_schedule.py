"""The trainer's schedule inside the in-process replay: prequential, like the live trainer.

Before each micro-batch, when a run is due (models/training_schedule.py, the live trainer's
rule: from `trainer_min_events` on, every `every` events and whenever the events seen have
doubled), a model is trained on the events before the batch (warm-started from the
previous snapshot) and the engine serves it from that batch on: a list at event t only
ever uses a model trained on events before t. The timeline records which version served
which events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from recstream.config.engine_params import sasrec_params
from recstream.config.settings import Settings
from recstream.models import sasrec
from recstream.models.recommender import Recommender
from recstream.models.sasrec import Snapshot
from recstream.models.training_schedule import training_due
from recstream.models.user_sequences import UserSequences


@dataclass(frozen=True)
class ServedVersion:
    """Model `version` served events [first_event, …) (indexes into the replay's events),
    trained on the `trained_events` before it in `train_s` seconds to `loss`."""

    version: int
    first_event: int
    trained_events: int
    train_s: float
    loss: float


class InProcessTrainer:
    """Trains on the live trainer's schedule (`settings.trainer_every_events` 0: never)."""

    def __init__(self, settings: Settings, engine: Recommender) -> None:
        self.settings = settings
        self.engine = engine
        self.every = settings.trainer_every_events
        self.params = sasrec_params(settings)
        self.sequences = UserSequences(keep=4 * self.params.max_len)
        self.snapshot: Snapshot | None = None
        self.last_trained = 0
        self.timeline: list[ServedVersion] = []

    def before_batch(self, start: int) -> None:
        """Train when due, on the `start` events seen so far, and serve the new model."""
        s = self.settings
        if not self.every:
            return
        due = training_due(
            start, self.last_trained, every=self.every, min_events=s.trainer_min_events,
            growth=s.trainer_growth,
        )  # fmt: skip
        if not due:
            return
        cat = self.engine.catalog
        snap = sasrec.train(
            self.sequences.sequences(), cat.ids[: cat.rows], cat.vectors[: cat.rows],
            self.params, s.trainer_seed, self.snapshot, device=s.trainer_device,
            trained_events=start, trained_through_ts=self.sequences.latest_ts,
        )  # fmt: skip
        self.engine.use_model(snap)
        self.snapshot, self.last_trained = snap, start
        self.timeline.append(ServedVersion(snap.version, start, start, snap.train_s, snap.loss))

    def after_batch(self, events: Sequence[Mapping[str, Any]]) -> None:
        for e in events:
            value = e.get("value")
            item = e.get("item_id")
            self.sequences.add(
                str(e["user_id"]), str(e["event_type"]), None if item is None else str(item),
                None if value is None else float(value), float(e["ts"]),
            )  # fmt: skip

    def report(self) -> list[dict[str, Any]]:
        return [asdict(v) for v in self.timeline]

    def note(self, n_events: int) -> str | None:
        """One line: which version served which events, and the training time."""
        if not self.timeline:
            return None
        spans = []
        for v, nxt in zip(self.timeline, [*self.timeline[1:], None], strict=True):
            end = n_events if nxt is None else nxt.first_event
            spans.append(f"v{v.version} [{v.first_event}, {end})")
        total = sum(v.train_s for v in self.timeline)
        return (
            f"sasrec: {len(self.timeline)} training runs, {total:.1f} s in all "
            f"({total / len(self.timeline):.1f} s each); no model for events "
            f"[0, {self.timeline[0].first_event}); " + ", ".join(spans)
        )
