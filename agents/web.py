"""The worker's web endpoints, routed to the worker that owns the user's partition.

GET /recommendations/{user_id}/  the latest published list
GET /users/{user_id}/            the user's state: decayed interests, posterior, weights
GET /items/{item_id}/            a catalog entry with its vector (the catalog is on every worker)
GET /stats/embedding/            micro-batch sizes and encode times of this worker
GET /trending/                   the items trending in the current short window
"""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from recstream.agents.embedding import EmbeddingRuntime
from recstream.agents.inspection import user_report
from recstream.agents.ranking import FusedRanker, UserRanking
from recstream.agents.state import interest_params, load_user_state
from recstream.agents.tables import Tables
from recstream.agents.windows import WindowTables
from recstream.config.settings import Settings


def register_web(
    app: faust.App,
    settings: Settings,
    tables: Tables,
    runtime: EmbeddingRuntime,
    ranker: FusedRanker,
    windows: WindowTables,
) -> None:
    params = interest_params(settings)

    @app.page("/recommendations/{user_id}/")
    @app.table_route(table=tables.latest_lists, match_info="user_id")
    async def recommendations(web: View, request: Request, user_id: str) -> Response:
        rec = tables.latest_lists.get(user_id)
        if rec is None:
            return web.json({"error": f"no list for user {user_id!r} yet"}, status=404)
        return web.json(rec)

    @app.page("/users/{user_id}/")
    @app.table_route(table=tables.user_state, match_info="user_id")
    async def users(web: View, request: Request, user_id: str) -> Response:
        raw = tables.user_state.get(user_id)
        if raw is None:
            return web.json({"error": f"unknown user {user_id!r}"}, status=404)
        state = load_user_state(raw, params)
        ranking = UserRanking.load(tables.user_ranking.get(user_id))
        report = user_report(user_id, state, ranking, runtime, ranker)
        report["window_counts"] = ranking.window_counts
        return web.json(report)

    @app.page("/trending/")
    async def trending(web: View, request: Request) -> Response:
        merged: dict[str, float] = {}
        latest = 0.0
        for value in windows.trending_top.values():
            if value:
                latest = max(latest, float(value["window_start"]))
        for value in windows.trending_top.values():
            if value and float(value["window_start"]) == latest:
                for item, count in value["items"].items():
                    merged[item] = merged.get(item, 0.0) + float(count)
        top = sorted(merged.items(), key=lambda kv: -kv[1])[: settings.trending_top_n]
        return web.json({"window_start": latest, "items": top})

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
                "index_size": 0 if runtime.index is None else len(runtime.index),
                "stale_vectors": runtime.stale_vectors,
            }
        )
