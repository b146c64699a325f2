"""Operations routes: the model catalog, liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..config.catalog import ModelSpec
from ..errors import NotFound
from ..runtime import oom
from ..runtime.state import gateway
from ..schemas.openai import ModelCard, ModelList, OpenAIError
from . import routes, tenancy

router = APIRouter()


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _card(spec: ModelSpec) -> dict[str, Any]:
    return {
        "id": spec.name,
        "object": "model",
        "owned_by": spec.upstream,
        "created": 0,
        "modalities": sorted(spec.modalities),
        "dimensions": list(spec.dimensions) or None,
        "default_dimension": spec.default_dimension,
        "max_dimension": spec.max_dimension or (max(spec.dimensions) if spec.dimensions else None),
        "max_batch": spec.max_batch,
    }


@router.get(
    routes.MODELS, response_model=ModelList, responses={401: {"model": OpenAIError}}, summary="The model catalog"
)
async def list_models(request: Request) -> Response:
    gw = gateway(request)
    team = tenancy.authenticate(request, gw)
    cards = [_card(spec) for spec in gw.catalog if team is None or team.allows(spec.name)]
    return _json({"object": "list", "data": cards})


@router.get(
    routes.MODEL,
    response_model=ModelCard,
    responses={401: {"model": OpenAIError}, 404: {"model": OpenAIError}},
    summary="One model of the catalog (OpenAI's models.retrieve)",
)
async def retrieve_model(request: Request, model_id: str) -> Response:
    gw = gateway(request)
    team = tenancy.authenticate(request, gw)
    spec = gw.catalog.get(model_id)
    if spec is None or (team is not None and not team.allows(spec.name)):
        # OpenAI's answer, whether the model is unknown or another team's: nothing tells the two apart.
        raise NotFound(f"The model '{model_id}' does not exist or you do not have access to it.")
    return _json(_card(spec))


@router.get(
    routes.HEALTHZ,
    responses={503: {"description": "a process was killed for memory"}},
    summary="Liveness: the process answers, and no process of it was killed for memory",
)
async def healthz() -> Response:
    killed = oom.killed_since_start()
    if killed:
        message = (
            f"{killed} process(es) of the gateway were killed by the OOM killer since it started: raise the "
            "memory limit or lower WORKERS (a killed worker is replaced, and would be killed again)"
        )
        return _json({"status": "unhealthy", "reason": message}, status=503)
    return _json({"status": "ok"})


@router.get(
    routes.READYZ, responses={503: {"description": "not ready"}}, summary="Readiness: Redis and upstream configuration"
)
async def readyz(request: Request) -> Response:
    gw = gateway(request)
    cache = await gw.cache.status()
    states = gw.upstreams.states()
    ready = gw.ready and bool(states) and all(state != "loading" for state, _ in states.values())
    body = {
        "status": "ready" if ready else "not ready",
        "cache": cache,
        "limits": gw.limits.status(),
        "upstreams": {
            name: {"kind": gw.upstream_kinds[name], "state": state, "circuit": circuit}
            for name, (state, circuit) in sorted(states.items())
        },
        "models": len(gw.catalog),
    }
    # A failing Redis does not make the gateway unready: requests are still answered (cache skipped).
    return _json(body, 200 if ready else 503)


@router.get(routes.METRICS, include_in_schema=False)
async def metrics(request: Request) -> Response:
    gw = gateway(request)  # rendered at most every RENDER_EVERY_S: a scrape loop cannot take the worker (scrapes.py)
    body, content_type = gw.scrapes.answer(gw.metrics, request.headers.get("accept", ""))
    return Response(body, media_type=content_type)
