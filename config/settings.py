"""The one settings object of recstream.

Every knob of the pipeline is a field here, with its default and unit documented. This module is
the only place that reads environment variables: each field `foo` is overridden by
`RECSTREAM_FOO` (for example `RECSTREAM_BOOTSTRAP=broker:9092`). Everything else receives a
`Settings` instance (or plain values taken from it); models/ never sees it.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The Kafka version the local broker runs; the pom in config/kafka pins the same one.
KAFKA_VERSION = "3.9.1"

EVENT_TYPES: tuple[str, ...] = (
    "view",
    "click",
    "add_to_cart",
    "purchase",
    "rate",
    "search",
    "skip",
    "dislike",
)


def _default_home() -> Path:
    # Outside the work tree so that jars, broker data and caches never end up in git.
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recstream"


class Settings(BaseSettings):
    """Frozen, typed settings; env prefix `RECSTREAM_`.

    Invariants: partition counts ≥ 1; half-lives > 0 seconds; `min_event_ts` < now.
    """

    model_config = SettingsConfigDict(env_prefix="RECSTREAM_", frozen=True, extra="forbid")

    # --- Kafka connection -------------------------------------------------------------------
    bootstrap: str = Field(
        "",
        description="host:port list of an existing Kafka cluster. Empty: the local broker "
        "started by `recstream kafka start` at 127.0.0.1:`kafka_port`.",
    )
    kafka_port: int = Field(9092, description="Client port of the local broker (127.0.0.1).")
    kafka_controller_port: int = Field(
        9093, description="KRaft controller port of the local broker (127.0.0.1)."
    )
    kafka_heap: str = Field("512m", description="JVM heap (-Xmx) of the local broker.")
    home: Path = Field(
        default_factory=_default_home,
        description="Where the local broker keeps its data, logs, pid file and resolved "
        "classpath (default ~/.cache/recstream). Never inside the repository.",
    )
    maven_repo: Path | None = Field(
        None, description="Local Maven repository for the broker jars (default: Maven's ~/.m2)."
    )
    broker_start_timeout_s: float = Field(90.0, description="Seconds to wait for the broker.")

    # --- Topics -----------------------------------------------------------------------------
    app_id: str = Field(
        "recstream",
        description="Faust application id: the consumer group and the prefix of internal "
        "topics (changelogs, repartitions).",
    )
    topic_prefix: str = Field(
        "", description="Prefix for every topic name (tests use a throwaway one)."
    )
    events_topic: str = Field("events", description="User events, keyed by user_id.")
    items_topic: str = Field("items", description="Catalog items, keyed by item_id.")
    recommendations_topic: str = Field(
        "recommendations", description="Published top-K lists, keyed by user_id."
    )
    dead_letter_topic: str = Field(
        "dead-letters", description="Records that failed decoding or validation."
    )
    events_partitions: int = Field(
        8, ge=1, description="Partitions of the events topic: the unit of scaling."
    )
    items_partitions: int = Field(4, ge=1, description="Partitions of the items topic.")
    recommendations_partitions: int = Field(8, ge=1, description="Partitions of the output.")
    dead_letter_partitions: int = Field(1, ge=1, description="Partitions of the dead letters.")
    replication_factor: int = Field(1, ge=1, description="Replication of created topics.")

    # --- Worker -----------------------------------------------------------------------------
    store: str = Field(
        "rocksdb://",
        description="Faust table store: rocksdb:// (RocksDB through rocksdict) or memory://.",
    )
    data_dir: Path = Field(
        Path("var/worker"), description="Worker data directory (RocksDB files)."
    )
    web_host: str = Field("127.0.0.1", description="Bind address of the worker web server.")
    web_port: int = Field(6066, description="Port of the worker web server.")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="Kafka processing guarantee. at_least_once plus event_id de-duplication "
        "makes state updates idempotent.",
    )
    standby_replicas: int = Field(
        0, ge=0, description="Faust table standby replicas (raise in multi-worker deployments)."
    )
    log_level: str = Field("warning", description="Worker log level.")

    # --- Validation -------------------------------------------------------------------------
    max_payload_bytes: int = Field(
        65_536, ge=256, description="Records larger than this (bytes) go to the dead letters."
    )
    min_event_ts: float = Field(
        631_152_000.0, description="Earliest accepted event time (epoch s; 1990-01-01)."
    )
    max_future_s: float = Field(
        86_400.0, ge=0, description="How far (s) past the worker's clock an event time may be."
    )
    max_text_chars: int = Field(4096, ge=1, description="Longer text fields are truncated.")

    # --- State ------------------------------------------------------------------------------
    dedupe_capacity: int = Field(
        256, ge=1, description="Recent event_ids remembered per user for de-duplication."
    )
    max_consumed: int = Field(
        500, ge=1, description="Recently consumed items remembered per user (excluded)."
    )

    # --- Ranking ----------------------------------------------------------------------------
    ranker: Literal["popularity"] = Field(
        "popularity",
        description="Which ranker publishes lists. popularity: the popularity baseline "
        "(time-decayed global popularity, consumed items excluded).",
    )
    top_k: int = Field(10, ge=1, le=1000, description="Items per published list.")
    popularity_half_life_s: float = Field(
        7 * 86_400.0, gt=0, description="Half-life (event-time seconds) of item popularity."
    )
    popular_top_n: int = Field(
        200, ge=1, description="Most popular items each popularity partition broadcasts."
    )
    popular_snapshot_interval_s: float = Field(
        0.5, gt=0, description="Wall seconds between broadcasts of a partition's top items."
    )
    debounce_s: float = Field(
        0.0,
        ge=0,
        description="At most one list per user per this many wall seconds; later events "
        "inside the interval are folded into one list published when it ends. 0: a list "
        "after every event (evaluation).",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.kafka_port == self.kafka_controller_port:
            raise ValueError("kafka_port and kafka_controller_port must differ")
        if not self.store.startswith(("rocksdb://", "memory://")):
            raise ValueError(f"store must be rocksdb:// or memory://, got {self.store!r}")
        return self

    # --- Derived ----------------------------------------------------------------------------
    @cached_property
    def bootstrap_servers(self) -> str:
        """The bootstrap list clients use: `bootstrap`, else the local broker."""
        return self.bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def uses_local_broker(self) -> bool:
        return not self.bootstrap

    def topic(self, name: str) -> str:
        """Full topic name with the configured prefix."""
        return f"{self.topic_prefix}{name}"

    @property
    def kafka_dir(self) -> Path:
        """Local broker files: data/, logs, pid, classpath."""
        return self.home / f"kafka-{KAFKA_VERSION}-{self.kafka_port}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
