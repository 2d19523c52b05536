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
from recstream.streams.admin import table_partitions


@dataclass(frozen=True)
class Tables:
    user_state: faust.types.TableT
    """user_id → UserRecord bytes (models/user_record.py), co-partitioned with `events`: one
    changelog record per changed user per micro-batch."""
    catalog: faust.types.tables.GlobalTableT
    """item_id → {title, categories, ts, text_key, vec}: the live catalog, on every worker."""
    shared_deltas: faust.types.tables.GlobalTableT
    """"<partition>:<last offset>:<piece>" → SharedDelta JSON: what each events partition's
    micro-batch taught the shared statistics, read by every worker."""


def declare_tables(
    app: faust.App,
    settings: Settings,
    on_catalog_change: Callable[[Any], Awaitable[None]] | None = None,
    on_shared_delta: Callable[[Any], Awaitable[None]] | None = None,
) -> Tables:
    # Faust derives a table's store serializers from key_type/value_type (not from a
    # schema): bytes → raw values, anything else → JSON.
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
    partitions = table_partitions(s)
    return Tables(
        # Raw keys (key_type bytes; str keys are written as UTF-8): a key's changelog
        # partition is that of the event that wrote it (the source topic is keyed by the raw
        # id), and the web router finds the owning worker by hashing the serialized key. With
        # JSON keys (b'"u1"') it hashed other bytes than the producers did.
        user_state=app.Table(
            "user-state",
            key_type=bytes,
            value_type=bytes,
            partitions=partitions["user-state"],
            default=None,
        ),
        # Co-partitioned with the items topic. Every changelog record read (recovery, other
        # workers' writes) also updates the worker's in-memory vector index.
        catalog=global_table("catalog", partitions["catalog"], on_catalog_change),
        shared_deltas=global_table("shared-deltas", partitions["shared-deltas"], on_shared_delta),
    )
