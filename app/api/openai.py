"""POST /v1/embeddings: the OpenAI wire shape, extended with media items and DashScope options."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..inputs import items as parse_items
from ..inputs.media.inlining import parse_fetching
from ..inputs.params import resolve
from ..runtime.state import gateway
from ..schemas.openai import EmbeddingRequest, EmbeddingResponse, OpenAIError, document, entry, plain_request
from ..service import EmbedRequest, EmbedResult
from ..teams.team import model_for
from . import routes, tenancy
from .answer import answer
from .asgi.exchange import lease_of
from .body import read_object, validated
from .docs import request_body
from .turns import is_large

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": OpenAIError} for s in (400, 401, 403, 404, 413, 415, 429, 431, 502, 503, 504)
}


@router.post(
    routes.EMBEDDINGS,
    response_model=EmbeddingResponse,
    responses=ERRORS,
    openapi_extra=request_body(EmbeddingRequest),
    summary="Create embeddings (OpenAI shape; text, images, video)",
)
async def create_embeddings(request: Request) -> Response:
    gw = gateway(request)
    team = tenancy.authenticate(request, gw)
    data = await read_object(request, gw.caps.max_body_bytes, gw.memory)
    body = plain_request(data) or validated(EmbeddingRequest, data)
    spec = model_for(gw.catalog, team, body.model)
    params = resolve(
        spec,
        gw.upstream_kinds[spec.upstream],
        body.dimensions,
        body.options(),
        dim_param="dimensions",
        opt_prefix="",
        forward_unknown=False,
    )
    parse_contents = partial(parse_items.each_openai_item, spec=spec, limit=gw.caps.max_input_items, texts=gw.texts)
    lease = lease_of(request.scope, gw.memory) if gw.fetcher else None  # fetched media only
    large = is_large(body.input)
    if large:
        await gw.turns.take()
    items = await parse_fetching(gw.fetcher, spec, body.input, "input", parse_contents, lease, gw.turns.take)
    if params.fusion:
        items = [parse_items.fuse_all(items, spec, "input")]
    if large:
        await gw.turns.take()
    result = await tenancy.embed(request, gw, team, EmbedRequest(spec, params, items))
    text = gw.base64s if body.encoding_format == "base64" else gw.floats
    facts = (spec.name, result.billed_tokens)
    headers = cache_headers(result)
    return await answer(request, gw.memory, document, facts, entry, result.vectors, text, headers, gw.skeletons)


def cache_headers(result: EmbedResult) -> dict[str, str]:
    return {"x-cache-hits": str(result.hits), "x-cache-misses": str(result.misses)}
