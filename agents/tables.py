"""Tables of the pipeline, declared once per app.

Values are bytes produced by the models' own compact `to_bytes()` encodings (state size is a
product metric), or small JSON objects. Every agent that writes a table runs with
concurrency 1, and a changed value is always assigned back so it reaches the changelog.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust

from recstream.config.settings import Settings


@dataclass(frozen=True)
class Tables:
    user_state: faust.types.TableT
    """user_id → InterestState bytes (co-partitioned with `events`)."""
    item_popularity: faust.types.TableT
    """item_id → ItemPopularity bytes (co-partitioned with the item-hits repartition)."""
    popular_top: faust.types.tables.GlobalTableT
    """"p<partition>" → {item_id: log_mass}: a popularity partition's top items (every worker)."""
    catalog: faust.types.tables.GlobalTableT
    """item_id → {title, categories, ts, text_key, vec}: the live catalog, on every worker."""
    latest_lists: faust.types.TableT
    """user_id → the latest published list (JSON), co-partitioned with `recommendations`."""
    user_ranking: faust.types.TableT
    """user_id → UserRanking JSON: fusion weights, recent items, window counts."""
    served_lists: faust.types.TableT
    """user_id → the user's last few lists as served (signals, bounds), for feedback."""
    global_weights: faust.types.tables.GlobalTableT
    """"p<partition>" → global fusion weights as updated by that partition's users."""
    covisit: faust.types.tables.GlobalTableT
    """item_id → CoVisitNeighbours JSON (top-M decayed neighbours) and the hashes of recently
    applied pair ids, on every worker."""


def declare_tables(
    app: faust.App,
    settings: Settings,
    on_catalog_change: Callable[[Any], Awaitable[None]] | None = None,
) -> Tables:
    # Faust derives a table's store serializers from key_type/value_type (not from a
    # schema): bytes → raw values, anything else → JSON.
    def table(name: str, partitions: int, *, raw: bool = False) -> faust.types.TableT:
        return app.Table(
            name,
            # Raw keys (key_type bytes; str keys are written as UTF-8): a key's changelog
            # partition is that of the event that wrote it (the source topic is keyed by the
            # raw id), and the web router finds the owning worker by hashing the serialized
            # key. With JSON keys (b'"u1"') it hashed other bytes than the producers did and
            # sent about half the requests to a worker without the key.
            key_type=bytes,
            value_type=bytes if raw else None,
            partitions=partitions,
            default=None,
        )

    def global_table(
        name: str,
        partitions: int,
        on_changelog_event: Callable[[Any], Awaitable[None]] | None = None,
    ) -> faust.types.tables.GlobalTableT:
        return app.GlobalTable(
            name,
            key_type=str,
            partitions=partitions,
            default=None,
            on_changelog_event=on_changelog_event,
        )

    s = settings
    return Tables(
        user_state=table("user-state", s.events_partitions, raw=True),
        item_popularity=table("item-popularity", s.events_partitions, raw=True),
        # Written by the popularity agent: changelog partition = item-hits partition.
        popular_top=global_table("popular-top", s.events_partitions),
        # Co-partitioned with the items topic. Every changelog record read (recovery, other
        # workers' writes) also updates the worker's in-memory vector index.
        catalog=global_table("catalog", s.items_partitions, on_catalog_change),
        latest_lists=table("latest-lists", s.recommendations_partitions),
        user_ranking=table("user-ranking", s.events_partitions),
        served_lists=table("served-lists", s.recommendations_partitions),
        global_weights=global_table("global-weights", s.events_partitions),
        covisit=global_table("covisit", s.events_partitions),
    )
