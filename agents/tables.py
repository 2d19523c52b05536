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
    user_state: faust.Table
    """user_id → InterestState bytes (co-partitioned with `events`)."""
    item_popularity: faust.Table
    """item_id → ItemPopularity bytes (co-partitioned with the item-hits repartition)."""
    popular_top: faust.GlobalTable
    """"p<partition>" → {item_id: log_mass}: each popularity partition's top items, on every worker."""
    catalog: faust.GlobalTable
    """item_id → {title, categories, ts}: the live catalog, on every worker."""
    latest_lists: faust.Table
    """user_id → the latest published list (JSON), co-partitioned with `recommendations`."""
    user_ranking: faust.Table
    """user_id → UserRanking JSON: fusion weights, recently served lists, recent items."""
    served_lists: faust.Table
    """user_id → the user's last few lists as served (signals, bounds), for feedback."""
    global_weights: faust.GlobalTable
    """"p<partition>" → global fusion weights as updated by that partition's users."""
    covisit: faust.GlobalTable
    """item_id → CoVisitNeighbours JSON (top-M decayed neighbours), on every worker."""
    """user_id → the latest published list (JSON), co-partitioned with `recommendations`."""


def declare_tables(
    app: faust.App,
    settings: Settings,
    on_catalog_change: Callable[[Any], Awaitable[None]] | None = None,
) -> Tables:
    # Faust derives a table's store serializers from key_type/value_type (not from a
    # schema): bytes → raw, anything else → json.
    raw = {"key_type": str, "value_type": bytes}
    as_json = {"key_type": str}
    return Tables(
        user_state=app.Table(
            "user-state", partitions=settings.events_partitions, default=None, **raw
        ),
        item_popularity=app.Table(
            "item-popularity", partitions=settings.events_partitions, default=None, **raw
        ),
        popular_top=app.GlobalTable(
            "popular-top",
            **as_json,
            # Written by the popularity agent: changelog partition = item-hits partition.
            partitions=settings.events_partitions,
            default=None,
        ),
        catalog=app.GlobalTable(
            "catalog",
            **as_json,
            partitions=settings.items_partitions,  # co-partitioned with the items topic
            default=None,
            # Every changelog record read (recovery, other workers' writes) also updates the
            # worker's in-memory vector index.
            on_changelog_event=on_catalog_change,
        ),
        latest_lists=app.Table(
            "latest-lists",
            **as_json,
            partitions=settings.recommendations_partitions,
            default=None,
        ),
        user_ranking=app.Table(
            "user-ranking", partitions=settings.events_partitions, default=None, **as_json
        ),
        served_lists=app.Table(
            "served-lists",
            partitions=settings.recommendations_partitions,
            default=None,
            **as_json,
        ),
        global_weights=app.GlobalTable(
            "global-weights", partitions=settings.events_partitions, default=None, **as_json
        ),
        covisit=app.GlobalTable(
            "covisit", partitions=settings.events_partitions, default=None, **as_json
        ),
    )
