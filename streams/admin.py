"""Topic administration with kafka-python: create the pipeline's topics with their partitions.

Producers may write before any worker runs; creating topics explicitly (instead of relying
on broker auto-creation with 1 partition) keeps the partition counts the settings ask for.
"""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from recstream.config.settings import Settings
from recstream.models.errors import ConfigError


def topic_specs(settings: Settings) -> dict[str, int]:
    """Full topic name → partition count, for the user-facing topics."""
    return {
        settings.topic(settings.events_topic): settings.events_partitions,
        settings.topic(settings.items_topic): settings.items_partitions,
        settings.topic(settings.recommendations_topic): settings.recommendations_partitions,
        settings.topic(settings.dead_letter_topic): settings.dead_letter_partitions,
    }


def internal_topic(settings: Settings, name: str) -> str:
    """Full name of an internal (worker-to-worker) stream topic of the app."""
    return settings.topic(f"{settings.app_id}-{name}")


def table_partitions(settings: Settings) -> dict[str, int]:
    """Table name → partition count of the worker's tables (agents/tables.py declares them
    from this): the per-user tables like `events`, the catalogue like `items`."""
    return {
        "user-state": settings.events_partitions,
        "catalog": settings.items_partitions,
        "shared-deltas": settings.events_partitions,
    }


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's changelog topic of a table (`<app id>-<table>-changelog`)."""
    return f"{settings.app_id}-{table}-changelog"


def changelog_topic_specs(settings: Settings) -> dict[str, int]:
    """Full changelog topic name → partition count, for every table of the worker."""
    return {changelog_topic(settings, t): n for t, n in table_partitions(settings).items()}


def internal_topic_specs(settings: Settings) -> dict[str, int]:
    """Full topic name → partition count, for the internal stream topics agents consume
    (keyed like `items`, with its partition count, so every hop stays on the owner)."""
    return {
        internal_topic(settings, "item-vectors"): settings.items_partitions,
    }


def ensure_topics(
    settings: Settings, timeout_ms: int = 15_000, *, internal: bool = False
) -> list[str]:
    """Create missing topics; return the names created. With `internal`, the internal stream
    topics and the tables' changelogs (compacted, as Faust makes them) too: a worker creates
    them before its Faust app starts, because Faust's group assignment can read the metadata
    before the topics Faust itself just created appear ("Ignoring missing topic") and then
    never assigns them (seen as a stage that never embeds an item, and as a worker that never
    took its shared-deltas changelog, on a fresh app id).

    An existing topic whose partition count differs from the settings is an error: tables
    are co-partitioned with their source topic, and Faust refuses a mismatch at run time.
    """
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=timeout_ms
    )
    try:
        existing = set(admin.list_topics())
        changelogs = changelog_topic_specs(settings) if internal else {}
        wanted = topic_specs(settings) | changelogs
        wanted |= internal_topic_specs(settings) if internal else {}
        present = [name for name in wanted if name in existing]
        if present:
            for desc in admin.describe_topics(present):
                name = desc.get("topic") or desc.get("name")
                have = len(desc.get("partitions") or [])
                if name in wanted and have and have != wanted[name]:
                    raise ConfigError(
                        f"topic {name!r} has {have} partitions but the settings ask for "
                        f"{wanted[name]}; set the partition count to {have} or recreate the topic"
                    )
        missing = [
            NewTopic(
                name,
                num_partitions=n,
                replication_factor=settings.replication_factor,
                topic_configs={"cleanup.policy": "compact"} if name in changelogs else {},
            )
            for name, n in wanted.items()
            if name not in existing
        ]
        created = []
        for topic in missing:
            try:
                admin.create_topics([topic], timeout_ms=timeout_ms)
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def delete_topics_with_prefix(settings: Settings, prefix: str) -> list[str]:
    """Delete every topic whose name starts with `prefix` (test clean-up)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        names = [t for t in admin.list_topics() if t.startswith(prefix)]
        if names:
            admin.delete_topics(names)
        return names
    finally:
        admin.close()
