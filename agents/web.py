"""The worker's web endpoints, routed to the worker that owns the user's partition.

GET /recommendations/{user_id}/  the latest published list
GET /users/{user_id}/            the user's state: decayed interests, posterior, weights
GET /items/{item_id}/            a catalog entry with its vector (the catalog is on every worker)
GET /stats/embedding/            micro-batch sizes and encode times of this worker
GET /trending/                   the most popular items (decayed popularity)
GET /stats/engine/               shared-statistics deltas applied, unreadable records skipped
"""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from recstream.agents.embedding import EmbeddingRuntime
from recstream.agents.engine_runtime import EngineRuntime
from recstream.agents.inspection import user_report
from recstream.agents.tables import Tables
from recstream.config.settings import Settings
from recstream.models import decay
from recstream.models.catalog import Catalog


def register_web(
    app: faust.App,
    settings: Settings,
    tables: Tables,
    runtime: EmbeddingRuntime,
    engine: EngineRuntime,
) -> None:
    def catalog() -> Catalog | None:
        return engine.engine(runtime.index.dim).catalog if runtime.index is not None else None

    @app.page("/recommendations/{user_id}/")
    @app.table_route(table=tables.user_state, match_info="user_id")
    async def recommendations(web: View, request: Request, user_id: str) -> Response:
        rec = engine.load_state(tables.user_state.get(user_id))
        if rec is None or rec.last_list is None:
            return web.json({"error": f"no list for user {user_id!r} yet"}, status=404)
        return web.json(rec.last_list)

    @app.page("/users/{user_id}/")
    @app.table_route(table=tables.user_state, match_info="user_id")
    async def users(web: View, request: Request, user_id: str) -> Response:
        raw = tables.user_state.get(user_id)
        rec = engine.load_state(raw)
        if raw is None or rec is None:
            return web.json({"error": f"unknown user {user_id!r}"}, status=404)
        return web.json(user_report(user_id, rec, catalog(), engine.params, raw))

    @app.page("/trending/")
    async def trending(web: View, request: Request) -> Response:
        """The most popular items (decayed popularity, event time of the latest delta)."""
        shared = engine.shared
        at = (
            max(shared.popularity.values(), default=0.0) / shared.pop_rate
            if shared.popularity
            else 0.0
        )
        best = sorted(shared.popularity.items(), key=lambda kv: (-kv[1], kv[0]))
        items = [
            (i, decay.score(lm, at, shared.pop_rate)) for i, lm in best[: settings.trending_top_n]
        ]
        return web.json({"items": items})

    @app.page("/stats/engine/")
    async def engine_stats(web: View, request: Request) -> Response:
        return web.json(
            {
                "deltas_applied": engine.deltas_applied,
                "bad_deltas": engine.bad_deltas,
                "bad_states": engine.bad_states,
                "popular_items": len(engine.shared.popularity),
                "covisit_items": len(engine.shared.covisit),
                "sequence_items": len(engine.shared.sequence),
                "model_version": engine.models.version,
                "model_swaps": engine.models.swaps,
                "models_refused": engine.models.refused,
            }
        )

    @app.page("/items/{item_id}/")
    async def items(web: View, request: Request, item_id: str) -> Response:
        entry = tables.catalog.get(item_id)
        if entry is None:
            return web.json({"error": f"unknown item {item_id!r}"}, status=404)
        return web.json(
            {"item_id": item_id, "indexed": runtime.item_vector(item_id) is not None, **entry}
        )

    @app.page("/stats/embedding/")
    async def embedding_stats(web: View, request: Request) -> Response:
        stats = runtime.stats
        return web.json(
            {
                "model_id": runtime.model_id,
                "batches": len(stats.sizes),
                "encoded": stats.encoded,
                "cache_hits": stats.cache_hits,
                "batch_sizes": stats.sizes[-1000:],
                "batch_ms": [round(x, 3) for x in stats.encode_ms[-1000:]],
                "batch_started_at": [round(x, 4) for x in stats.started_at[-1000:]],
                "index_size": 0 if runtime.index is None else len(runtime.index),
                "stale_vectors": runtime.stale_vectors,
            }
        )
