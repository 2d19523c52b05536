"""Fixtures of the agents tier; the harness itself is in agent_harness.py.

Every test that takes `run_scenario` runs once per table store (memory:// and rocksdb://).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import STORES, AgentHarness, RunScenario, Scenario

from recstream.config.settings import Settings


@pytest.fixture(scope="session")
def text_encoder() -> Any:
    """The real sentence-transformers encoder, loaded once for the whole session."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from recstream.models.encoder import TextEncoder

    return TextEncoder("default", device="cpu", num_threads=2)


@pytest.fixture(params=STORES, ids=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    for name in list(os.environ):
        if name.startswith("RECSTREAM_"):
            monkeypatch.delenv(name)
    yield Settings(
        store=store,
        data_dir=tmp_path / "worker",
        app_id="agents-test",
        events_partitions=2,
        recommendations_partitions=2,
        items_partitions=2,
        debounce_s=0.0,
        embed_device="cpu",
        embed_wait_s=0.01,
        max_payload_bytes=4096,
    )


@pytest.fixture
def run_scenario(settings: Settings, text_encoder: Any) -> RunScenario:
    """`run_scenario(scenario, **settings_overrides)`: build a pipeline inside a fresh event
    loop and run `await scenario(harness)` (at most 60 s)."""

    def run(scenario: Scenario, **overrides: Any) -> None:
        s = settings.model_copy(update=overrides) if overrides else settings

        async def main() -> None:
            harness = AgentHarness(s, text_encoder)
            try:
                await asyncio.wait_for(scenario(harness), timeout=60)
            finally:
                harness.close()

        asyncio.run(main())

    return run
