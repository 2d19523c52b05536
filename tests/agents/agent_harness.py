"""Harness of the agents tier: agents under Faust's `agent.test_context()`, with no broker.

How this works (faust-streaming 0.15):

* `agent.test_context()` clones the agent onto an in-memory channel; `await wrapper.put(value,
  key=..., partition=...)` delivers one record as if it came from the agent's real topic (the
  event's `message.topic` is the real topic name, `offset` counts puts from 0). `put` returns
  once the stream has *taken* the record, not once the agent body has finished with it, so
  the tests wait for effects with `AgentHarness.eventually`, and prove that something did
  *not* happen with a later record that must be processed after it (one actor per agent).
* `topic.send()` from inside an agent goes to `app.producer` (started on first use): a
  `CapturingProducer` stands in for it and records every message, already serialized, as Kafka
  would receive it. Table writes go through the same producer (`send_soon`, the changelog).
* Tables run on the store under test: `memory://` and `rocksdb://` (rocksdict). RocksDB works
  without partition assignment because Faust opens a partition's database lazily on the first
  write from an event of that partition, and reads by key look in the event's partition (or,
  outside an event and for global tables, in every opened one). What needs an assignment is
  iterating or counting a *non-global* table (only assigned active partitions are visible):
  the agents never do that, and neither do these tests.
* The sentence-transformers encoder is loaded once per session and handed to each pipeline's
  `EmbeddingRuntime` (the agents only need its model id, the embedders encode for real).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP, FutureMessage, RecordMetadata
from faust.types.agents import AgentTestWrapperT

from recstream.agents.embedding import EmbeddingRuntime
from recstream.agents.pipeline import Pipeline, build_pipeline
from recstream.agents.tables import Tables
from recstream.config.settings import Settings
from recstream.streams.topics import Topics

T0 = 1_700_000_000.0
"""Event time (epoch s) the tests build on."""

STORES = ("memory://", "rocksdb://")


@dataclass(frozen=True)
class Sent:
    """One message the pipeline produced, serialized as it would reach Kafka."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None

    @property
    def key_text(self) -> str | None:
        return None if self.key is None else self.key.decode("utf-8")

    def json(self) -> Any:
        assert self.value is not None, f"message to {self.topic} has no value"
        return json.loads(self.value)


class CapturingProducer:
    """Stands in for `app.producer`: records messages instead of sending them to Kafka."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        """Messages sent with `topic.send()` (what the agents publish)."""
        self.changelog: list[Sent] = []
        """Messages buffered with `send_soon()` (table changelog writes)."""

    async def maybe_start(self) -> None:
        return None

    def _metadata(self, topic: str, partition: int | None, offset: int) -> RecordMetadata:
        return RecordMetadata(
            topic=topic,
            partition=partition or 0,
            topic_partition=TP(topic, partition or 0),
            offset=offset,
        )

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        self.sent.append(Sent(topic, key, value, partition))
        fut: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        fut.set_result(self._metadata(topic, partition, len(self.sent) - 1))
        return fut

    async def send_and_wait(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> RecordMetadata:
        return await (await self.send(topic, key, value, partition, timestamp, headers))

    def send_soon(self, fut: FutureMessage) -> None:
        msg = fut.message
        topic = msg.channel.get_topic_name()
        self.changelog.append(Sent(topic, msg.key, msg.value, msg.partition))

    def key_partition(self, topic: str, key: bytes) -> TP:
        return TP(topic, 0)


class AgentHarness:
    """One pipeline built from Settings, its producer replaced by a `CapturingProducer`."""

    def __init__(self, settings: Settings, encoder: Any) -> None:
        self.pipeline: Pipeline = build_pipeline(settings)
        self.app.finalize()
        self.producer = CapturingProducer()
        self.app.producer = self.producer  # type: ignore[assignment]
        # Share the session's encoder instead of loading the model again (~3 s) per test.
        self.runtime._encoder = encoder

    @property
    def app(self) -> faust.App:
        return self.pipeline.app

    @property
    def settings(self) -> Settings:
        return self.pipeline.settings

    @property
    def tables(self) -> Tables:
        return self.pipeline.tables

    @property
    def topics(self) -> Topics:
        return self.pipeline.topics

    @property
    def runtime(self) -> EmbeddingRuntime:
        return self.pipeline.runtime

    @asynccontextmanager
    async def agent(self, name: str) -> AsyncIterator[AgentTestWrapperT]:
        """The named agent (a key of `Pipeline.agents`) running on an in-memory channel."""
        async with self.pipeline.agents[name].test_context() as wrapper:
            yield wrapper

    def sent(self, topic: faust.TopicT) -> list[Sent]:
        """Messages sent to `topic` so far, in order."""
        name = topic.get_topic_name()
        return [s for s in self.producer.sent if s.topic == name]

    async def eventually(
        self,
        check: Callable[[], bool],
        what: str,
        agent: AgentTestWrapperT | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """Wait until `check()` holds; re-raise the exception `agent` crashed with, or fail after
        the timeout."""
        deadline = time.monotonic() + timeout_s
        while not check():
            if agent is not None and agent.crashed and agent.crash_reason is not None:
                # The agent's own exception, so that a test can name what crashes it.
                reason = agent.crash_reason
                reason.add_note(f"(the agent crashed while the test waited for {what})")
                raise reason
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            await asyncio.sleep(0.005)

    def close(self) -> None:
        """Release the encoder thread and the vector cache (RocksDB) of this pipeline."""
        self.runtime._executor.shutdown(wait=True)
        if self.runtime._cache is not None:
            self.runtime._cache.close()


Scenario = Callable[[AgentHarness], Awaitable[None]]
RunScenario = Callable[..., None]


def event_bytes(
    user: str = "u1",
    event_id: str | None = "e1",
    ts: float = T0,
    item: str | None = "i1",
    event_type: str = "click",
    **extra: Any,
) -> bytes:
    """A raw `events` record value (compact JSON), as a producer would write it."""
    body: dict[str, Any] = {"user_id": user, "event_type": event_type, "ts": ts}
    if item is not None:
        body["item_id"] = item
    if event_id is not None:
        body["event_id"] = event_id
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def item_bytes(
    item_id: str = "i1",
    title: str = "Blue Train",
    categories: tuple[str, ...] = ("jazz",),
    **extra: Any,
) -> bytes:
    """A raw `items` record value."""
    body: dict[str, Any] = {
        "item_id": item_id,
        "title": title,
        "text": f"{title}: a record",
        "categories": list(categories),
        "ts": T0,
    }
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode("utf-8")
