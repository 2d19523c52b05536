"""Publishing refreshed top-K lists, with per-user debouncing.

With `debounce_s = 0` a list follows every applied event (evaluation). Otherwise at most one
list per user per `debounce_s` wall seconds: an event inside the interval marks the user
pending, and a timer publishes one list reflecting all of them when the interval ends. Lists
are always computed from the state as of the last applied event (`as_of`), never later.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import faust

from recstream.agents.ranking import NAMES, FusedRanker, UserRanking, rec_seed
from recstream.agents.state import interest_params, load_user_state, top_interests
from recstream.agents.tables import Tables
from recstream.config.settings import Settings
from recstream.models import decay
from recstream.models.interest_state import InterestState
from recstream.models.popularity import rank_popular
from recstream.streams.records import AsOf, Recommendation, RecommendedItem
from recstream.streams.topics import Topics

POPULARITY = "popularity"
FUSED = "fused"
SERVED_LISTS_KEPT = 3


class ListPublisher:
    """Computes a user's list with the configured ranker and sends it, debounced."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        topics: Topics,
        tables: Tables,
        ranker: FusedRanker,
    ) -> None:
        self.settings = settings
        self.ranker = ranker
        self.topics = topics
        self.tables = tables
        self.params = interest_params(settings)
        self.rate = decay.decay_rate(settings.popularity_half_life_s)
        self._last_sent: dict[str, float] = {}  # user_id → wall time of the last list
        self._pending: dict[str, str] = {}  # user_id → event_id the pending list reflects
        self.published = 0
        if settings.debounce_s > 0:
            app.timer(interval=max(settings.debounce_s / 4, 0.05))(self._flush_due)

    def build(self, user_id: str, state: InterestState, event_id: str) -> Recommendation:
        """The list for `user_id` as of its last applied event (pure reads of the tables)."""
        if self.settings.ranker == "fused":
            return self.build_fused(user_id, state, event_id)
        return self.build_popularity(user_id, state, event_id)

    def build_fused(self, user_id: str, state: InterestState, event_id: str) -> Recommendation:
        ranking = UserRanking.load(self.tables.user_ranking.get(user_id))
        ranked, weights, bounds = self.ranker.rank(
            user_id, state, ranking, rec_seed(user_id, event_id)
        )
        meta = self.ranker.runtime.item_meta
        return Recommendation(
            user_id=user_id,
            rec_id=uuid.uuid4().hex,
            ts=time.time(),
            as_of=AsOf(event_id=event_id, ts=state.last_ts),
            ranker=FUSED,
            items=[
                RecommendedItem(
                    item_id=r.item_id,
                    score=r.score,
                    contributions=r.contributions,
                    title=meta.get(r.item_id, (None, None))[1] or None,
                    signals=r.signals or None,
                )
                for r in ranked
            ],
            weights=weights,
            top_interests=top_interests(state, state.last_ts, 3),
            signal_bounds=bounds,
        )

    def build_popularity(self, user_id: str, state: InterestState, event_id: str) -> Recommendation:
        at_ts = state.last_ts
        runtime = self.ranker.runtime
        ranked = rank_popular(
            [self.ranker.popularity()],
            at_ts=at_ts,
            rate=self.rate,
            k=self.settings.top_k,
            exclude=state.has_consumed,
            allowed=runtime.item_categories if runtime.item_categories else None,
        )
        items = [
            RecommendedItem(
                item_id=item_id,
                score=score,
                contributions={POPULARITY: score},
                title=runtime.item_meta.get(item_id, (None, None))[1] or None,
            )
            for item_id, score in ranked
        ]
        return Recommendation(
            user_id=user_id,
            rec_id=uuid.uuid4().hex,
            ts=time.time(),
            as_of=AsOf(event_id=event_id, ts=at_ts),
            ranker=POPULARITY,
            items=items,
            weights={POPULARITY: 1.0},
            top_interests=top_interests(state, at_ts, 3),
        )

    async def publish(self, user_id: str, state: InterestState, event_id: str) -> None:
        rec = self.build(user_id, state, event_id)
        await self.topics.recommendations.send(key=user_id, value=rec)
        self._last_sent[user_id] = time.monotonic()
        self.published += 1

    async def on_user_event(self, user_id: str, state: InterestState, event_id: str) -> None:
        debounce = self.settings.debounce_s
        if debounce <= 0:
            await self.publish(user_id, state, event_id)
            return
        last = self._last_sent.get(user_id)
        if last is None or time.monotonic() - last >= debounce:
            self._pending.pop(user_id, None)
            await self.publish(user_id, state, event_id)
        else:
            self._pending[user_id] = event_id

    async def _flush_due(self) -> None:
        now = time.monotonic()
        due = [
            u
            for u in self._pending
            if now - self._last_sent.get(u, 0.0) >= self.settings.debounce_s
        ]
        for user_id in due:
            event_id = self._pending.pop(user_id)
            raw = self.tables.user_state.get(user_id)
            if raw is None:
                continue  # partition moved to another worker; its owner publishes
            await self.publish(user_id, load_user_state(raw, self.params), event_id)


def register_publisher(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    tables: Tables,
    publisher: ListPublisher,
) -> faust.types.AgentT:
    """Materialises the latest list per user (served at GET /recommendations/{user_id}) and
    the last few served lists with their signals (read when feedback arrives)."""

    @app.agent(topics.recommendations, name=f"{settings.app_id}.latest-lists", concurrency=1)
    async def latest_lists(stream: faust.StreamT) -> None:
        async for rec in stream:
            value: dict[str, Any] = _plain(rec)
            tables.latest_lists[rec.user_id] = value
            if rec.ranker != FUSED or not rec.signal_bounds:
                continue
            record = {
                "rec_id": rec.rec_id,
                "items": {
                    i["item_id"]: [i["signals"].get(n, 0.0) for n in NAMES]
                    for i in value["items"]
                    if i.get("signals")
                },
                "lo": rec.signal_bounds["lo"],
                "hi": rec.signal_bounds["hi"],
            }
            kept = (tables.served_lists.get(rec.user_id) or {}).get("lists") or []
            tables.served_lists[rec.user_id] = {"lists": [*kept, record][-SERVED_LISTS_KEPT:]}

    return latest_lists


def _plain(value: Any) -> Any:
    """Faust records nested in a dict → plain JSON-able values."""
    if hasattr(value, "asdict"):
        return _plain(value.asdict())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
