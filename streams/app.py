"""The Faust application, built from Settings.

The app is created by a factory rather than at import time so that tests (and several
workers on one machine) can use throwaway app ids, topic prefixes and data directories.
`recstream.agents.pipeline.build_pipeline` declares topics, tables and agents on it once.
"""

from __future__ import annotations

import os
import socket

import faust

from recstream.config.settings import Settings

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def advertised_web_host(settings: Settings) -> str:
    """The host other workers use to reach this worker's web server.

    A wildcard bind address cannot be advertised: every worker would name itself 0.0.0.0 and
    take every request as its own (Faust compares the owner's URL with its own), answering
    404 for the users another worker holds. The machine's address is used instead.
    """
    if settings.web_advertised_host:
        return settings.web_advertised_host
    if settings.web_host not in WILDCARD_HOSTS:
        return settings.web_host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return socket.gethostname()


def create_app(settings: Settings) -> faust.App:
    """A Faust app configured from settings (broker, store, guarantees, web server)."""
    os.makedirs(settings.data_dir, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        store=settings.store,
        datadir=str(settings.data_dir),
        processing_guarantee=settings.processing_guarantee,
        topic_partitions=settings.events_partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        # web_host is what other workers are told (the routing of per-user requests to the
        # owning worker); web_bind is where this one listens.
        web_host=advertised_web_host(settings),
        web_port=settings.web_port,
        web_bind=settings.web_host,
        # The pipeline is autodiscovered from nothing: everything is declared explicitly.
        autodiscover=False,
        # Commit often: re-processing after a crash is cheap (updates are idempotent) but
        # each replayed event delays fresh lists.
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        producer_linger_ms=settings.producer_linger_ms,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        producer_max_request_size=max(settings.producer_max_batch_bytes, 1_048_576),
        producer_compression_type=(
            None if settings.producer_compression == "none" else settings.producer_compression
        ),
        table_cleanup_interval=30.0,
    )
