"""The worker's web endpoints, routed to the worker that owns the user's partition.

GET /recommendations/{user_id}/  the latest published list
GET /users/{user_id}/            the user's state: decayed interests, posterior, weights
"""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from recstream.agents.embedding import EmbeddingRuntime
from recstream.agents.inspection import user_report
from recstream.agents.ranking import FusedRanker, UserRanking
from recstream.agents.state import interest_params, load_user_state
from recstream.agents.tables import Tables
from recstream.config.settings import Settings


def register_web(
    app: faust.App,
    settings: Settings,
    tables: Tables,
    runtime: EmbeddingRuntime,
    ranker: FusedRanker,
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
        return web.json(user_report(user_id, state, ranking, runtime, ranker))
