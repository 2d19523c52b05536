"""Integration tier: a real Kafka broker (started by `make test`, or RECSTREAM_BOOTSTRAP) and
real worker processes. Each test gets throwaway topic names and app id, deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from rs_harness import Topic

from recstream.config.settings import Settings
from recstream.evaluation.workers import WorkerProcess
from recstream.streams.admin import delete_topics_with_prefix, ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker() -> Settings:
    settings = Settings()
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=5000
        )
        admin.list_topics()
        admin.close()
    except (KafkaError, OSError, ValueError) as exc:
        pytest.fail(
            f"no Kafka broker answers at {settings.bootstrap_servers} ({exc}); integration "
            "tests need one: run them with `make test`, or start one with "
            "`recstream kafka start`, or set RECSTREAM_BOOTSTRAP"
        )
    return settings


@pytest.fixture
def run_settings(broker: Settings, tmp_path: Path) -> Iterator[Settings]:
    tag = f"it{uuid.uuid4().hex[:8]}"
    settings = Settings(
        bootstrap=broker.bootstrap_servers,
        app_id=tag,
        topic_prefix=f"{tag}-",
        events_partitions=4,
        items_partitions=2,
        recommendations_partitions=4,
        data_dir=tmp_path / "worker",
        debounce_s=0.0,
        popular_snapshot_interval_s=0.05,
        max_payload_bytes=4096,
        log_level="info",
    )
    ensure_topics(settings)
    yield settings
    delete_topics_with_prefix(settings, tag)


@pytest.fixture
def start_worker(run_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(data_dir: Path | None = None, name: str = "w") -> WorkerProcess:
        worker = WorkerProcess(
            run_settings,
            data_dir=data_dir or tmp_path / f"data-{name}-{len(started)}",
            log_file=tmp_path / f"{name}-{len(started)}.log",
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.alive():
            worker.stop()


@pytest.fixture
def topics(run_settings: Settings) -> dict[str, Topic]:
    s = run_settings
    return {
        "events": Topic(s, s.topic(s.events_topic)),
        "items": Topic(s, s.topic(s.items_topic)),
        "recommendations": Topic(s, s.topic(s.recommendations_topic)),
        "dead_letters": Topic(s, s.topic(s.dead_letter_topic)),
    }
