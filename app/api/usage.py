"""The usage and costs routes, in the shapes of OpenAI's organization Usage and Costs APIs: an admin key
(`admins:`, or a key of a team with `admin: true`) reads every team; a team's key reads its own team only
(a filter naming another team is a 403)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..errors import Forbidden
from ..runtime.state import Gateway, gateway
from ..schemas.openai import OpenAIError
from ..usage.report import Query, costs_page, parse_query, usage_page
from . import routes, tenancy
from .asgi.exchange import exchange_of

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": OpenAIError} for s in (400, 401, 403, 429, 503)}
ADMINS = "_admins"  # whose desks admin keys take (and every caller while auth is off): limits/desks.py


def _param(name: str, kind: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    if kind == "array":
        items = {"type": "string", "maxLength": 128, **schema}
        schema = {"type": "array", "items": items, "maxItems": 16}
    else:
        schema = {"type": kind, **schema}
    return {"name": name, "in": "query", "required": required, "schema": schema, "explode": True}


def _params(widths: list[str], groups: list[str], *filters: str) -> dict[str, Any]:
    return {
        "parameters": [
            _param("start_time", "integer", True, minimum=0, maximum=10**12 - 1),
            _param("end_time", "integer", minimum=1, maximum=10**12 - 1),
            _param("bucket_width", "string", enum=widths),
            _param("group_by", "array", enum=groups),
            *(_param(f, "array") for f in filters),
            _param("limit", "integer", minimum=1, maximum=1440),
            _param("page", "string", maxLength=64),
        ]
    }


def _query(request: Request, gw: Gateway, *, costs: bool) -> tuple[Query, int]:
    reader = gw.auth.reader_of(request.headers)
    if reader is not None:
        exchange_team(request, reader.name)
    tenancy.seat(request, gw.desks, reader.name if reader is not None else ADMINS)
    params: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        params.setdefault(name, []).append(value)
    q, first = parse_query(params, now=int(gw.meter.ledger.clock()), costs=costs)
    if reader is None:
        return q, first
    if q.teams is not None and q.teams != {reader.name}:
        raise Forbidden(
            f"project_ids: the key of team {reader.name} reads its own team's usage only",
            param="project_ids",
            code="permission_denied",
        )
    return replace(q, teams=frozenset({reader.name})), first


def exchange_team(request: Request, team: str) -> None:
    exchange_of(request.scope).team = team


@router.get(
    routes.USAGE,
    summary="Embeddings usage per time bucket (OpenAI's shape)",
    responses=ERRORS,
    openapi_extra=_params(
        ["1m", "1h", "1d"], ["project_id", "api_key_id", "model"], "project_ids", "api_key_ids", "models"
    ),
)
async def usage_embeddings(request: Request) -> Response:
    gw = gateway(request)
    q, first = _query(request, gw, costs=False)
    group = [g for g in ("project_id", "api_key_id", "model") if g in q.group_by]
    buckets, nxt = await gw.reader.buckets(q, first, group)
    return Response(orjson.dumps(usage_page(q, buckets, nxt)), media_type="application/json")


@router.get(
    routes.COSTS,
    summary="Money billed per time bucket (OpenAI's shape)",
    responses=ERRORS,
    openapi_extra=_params(["1h", "1d"], ["project_id", "line_item"], "project_ids"),
)
async def costs(request: Request) -> Response:
    gw = gateway(request)
    q, first = _query(request, gw, costs=True)
    buckets, nxt = await gw.reader.buckets(q, first, [g for g in ("project_id", "line_item") if g in q.group_by])
    return Response(orjson.dumps(costs_page(q, buckets, nxt)), media_type="application/json")
