"""One contract for every system the evaluation scores: a batch of events in, one list per
event out, each list reflecting exactly the events up to its own (prequential).

`EngineSystem` is the workers' engine (apply → rank → shared deltas, with states through bytes
as a worker's table keeps them); `BaselineSystem` wraps a learn_one/predict_one baseline
(evaluation/baselines.py), excluding what the user consumed as the engine does. A contract
test (tests/unit/evaluation/test_system_contract.py) runs over the engine and every baseline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from recstream.evaluation.baselines import Recommender as Baseline
from recstream.models.recommender import Event, Recommender
from recstream.models.user_record import UserRecord
from recstream.models.vocabulary import CONSUMED_EVENT_TYPES


class System(Protocol):
    """What the evaluation needs of a recommender."""

    def process(self, events: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
        """(event_id, item ids best first) per event, in order: the list after that event."""
        ...


class EngineSystem:
    """The engine with its own states and replica of the shared statistics."""

    def __init__(self, engine: Recommender, partitions: int = 1) -> None:
        from recstream.evaluation.inprocess import to_event

        self.engine = engine
        self.partitions = partitions
        self.states: dict[str, UserRecord] = {}
        self._to_event = to_event

    def process(self, events: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
        evs: list[Event] = [self._to_event(e, self.partitions, {}) for e in events]
        applied = self.engine.apply(self.states, evs, lists="every")
        lists = self.engine.rank(applied)
        params = self.engine.params.interest
        for user, rec in applied.states.items():
            self.states[user] = UserRecord.from_bytes(rec.to_bytes(), params)
        for delta in applied.deltas.values():
            self.engine.shared.apply(delta)
        return [(str(lst.as_of_event_id), [r.item_id for r in lst.items]) for lst in lists]


class BaselineSystem:
    """A learn_one/predict_one model; `max_consumed` recent consumptions are excluded."""

    def __init__(self, model: Baseline, k: int, max_consumed: int = 500) -> None:
        self.model = model
        self.k = k
        self.max_consumed = max_consumed
        self.consumed: dict[str, dict[str, None]] = defaultdict(dict)

    def process(self, events: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
        out = []
        for e in events:
            self.model.learn_one(e)
            user, item = str(e["user_id"]), e.get("item_id")
            if item is not None and e.get("event_type") in CONSUMED_EVENT_TYPES:
                window = self.consumed[user]
                window.pop(item, None)
                window[item] = None
                if len(window) > self.max_consumed:
                    del window[next(iter(window))]
            ranked = self.model.predict_one(
                user, float(e["ts"]), self.k, exclude=frozenset(self.consumed[user])
            )
            out.append((str(e["event_id"]), ranked))
        return out
