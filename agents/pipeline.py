"""Builds the whole pipeline (app, topics, tables, agents, timers, web views) from Settings.

    streams/ (app, topics, schemas)  →  agents/ (this package)  →  models/ (pure computation)

Agents are thin shells: read state → call a pure function from models/ → assign the value
back → send. Every agent that writes a table runs with concurrency 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from recstream.agents.catalog import register_catalog
from recstream.agents.covisit import register_covisit
from recstream.agents.embedding import EmbeddingRuntime
from recstream.agents.events import register_events
from recstream.agents.popularity import register_popularity
from recstream.agents.publisher import ListPublisher, register_publisher
from recstream.agents.ranking import FusedRanker
from recstream.agents.tables import Tables, declare_tables
from recstream.agents.web import register_web
from recstream.agents.windows import WindowTables, declare_windows
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
    publisher: ListPublisher
    runtime: EmbeddingRuntime
    ranker: FusedRanker
    windows: WindowTables


def build_pipeline(settings: Settings) -> Pipeline:
    app = create_app(settings)
    topics = declare_topics(app, settings)
    runtime = EmbeddingRuntime(settings)
    tables = declare_tables(app, settings, on_catalog_change=runtime.on_catalog_changelog)
    windows = declare_windows(app, settings)
    ranker = FusedRanker(settings, tables, runtime)
    publisher = ListPublisher(app, settings, topics, tables, ranker)
    agents: dict[str, faust.types.AgentT] = {}
    agents.update(
        register_events(app, settings, topics, tables, publisher, runtime, ranker, windows)
    )
    agents["popularity"] = register_popularity(app, settings, topics, tables, windows)
    agents["covisit"] = register_covisit(app, settings, topics, tables)
    agents.update(register_catalog(app, settings, topics, tables, runtime))
    agents["latest_lists"] = register_publisher(app, settings, topics, tables, publisher)
    register_web(app, settings, tables, runtime, ranker, windows)
    return Pipeline(app, settings, topics, tables, agents, publisher, runtime, ranker, windows)
