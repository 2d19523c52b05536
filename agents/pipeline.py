"""Builds the whole pipeline (app, topics, tables, agents, timers, web views) from Settings.

    streams/ (app, topics, schemas)  →  agents/ (this package)  →  models/ (pure computation)

Agents are thin micro-batch shells: read a batch → call the engine → write each changed key
once → send → ack. Every agent that writes a table runs with concurrency 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from recstream.agents.catalog import register_catalog
from recstream.agents.embedding import EmbeddingRuntime
from recstream.agents.engine_runtime import EngineRuntime
from recstream.agents.events import register_events
from recstream.agents.tables import Tables, declare_tables
from recstream.agents.web import register_web
from recstream.config.settings import Settings
from recstream.streams.app import create_app
from recstream.streams.topics import Topics, declare_topics


@dataclass(frozen=True)
class Pipeline:
    app: faust.App
    settings: Settings
    topics: Topics
    tables: Tables
    agents: dict[str, faust.types.AgentT]
    runtime: EmbeddingRuntime
    engine: EngineRuntime


def build_pipeline(settings: Settings) -> Pipeline:
    app = create_app(settings)
    topics = declare_topics(app, settings)
    runtime = EmbeddingRuntime(settings)
    engine = EngineRuntime(settings, runtime)
    tables = declare_tables(
        app,
        settings,
        on_catalog_change=runtime.on_catalog_changelog,
        on_shared_delta=engine.on_shared_delta,
    )
    agents: dict[str, faust.types.AgentT] = {}
    agents.update(register_events(app, settings, topics, tables, runtime, engine))
    agents.update(register_catalog(app, settings, topics, tables, runtime))
    register_web(app, settings, tables, runtime, engine)
    return Pipeline(app, settings, topics, tables, agents, runtime, engine)
