"""DashScope-native routes, so that the official `dashscope` SDK works unchanged with
`dashscope.base_http_api_url = "http://HOST:PORT/api/v1"`."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..errors import InvalidRequest
from ..inputs import items as parse_items
from ..inputs.media.inlining import parse_fetching
from ..inputs.params import dashscope_options
from ..runtime.slices import collect
from ..runtime.state import Gateway, gateway
from ..schemas.dashscope import (
    DashScopeError,
    MultimodalRequest,
    MultimodalResponse,
    TextRequest,
    TextResponse,
)
from ..service import EmbedRequest, EmbedResult
from ..teams.team import model_for
from . import routes, tasks, tenancy
from .answer import VECTOR, Entry, answer
from .asgi.exchange import lease_of
from .body import parse
from .docs import request_body
from .openai import cache_headers
from .rendering import request_id_of
from .turns import is_large

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": DashScopeError} for s in (400, 401, 403, 404, 413, 415, 429, 431, 502, 503, 504)
}


def dashscope_params(gw: Gateway, spec: Any, parameters: dict[str, Any]) -> Any:
    return dashscope_options(spec, gw.upstream_kinds[spec.upstream], parameters)


async def _respond(request: Request, gw: Gateway, entry: Entry, result: EmbedResult, usage: dict[str, int]) -> Response:
    facts = (usage, request_id_of(request))
    return await answer(request, gw.memory, _document, facts, entry, result.vectors, gw.floats, cache_headers(result))


def _document(embeddings: Any, facts: tuple[dict[str, int], str]) -> dict[str, Any]:
    usage, request_id = facts
    return {"output": {"embeddings": embeddings}, "usage": usage, "request_id": request_id}


@router.post(
    routes.MULTIMODAL,
    response_model=MultimodalResponse,
    responses=ERRORS,
    openapi_extra=request_body(MultimodalRequest),
    summary="DashScope multimodal embedding (native shape)",
)
async def multimodal_embedding(request: Request) -> Response:
    gw = gateway(request)
    team = tenancy.authenticate(request, gw)
    tasks.refuse_async(request)
    body = await parse(request, MultimodalRequest, gw.caps.max_body_bytes, gw.memory)
    spec = model_for(gw.catalog, team, body.model)
    if spec.endpoint != "multimodal" and gw.upstream_kinds[spec.upstream] == "dashscope":
        raise InvalidRequest(f"model: {spec.name} is a text model: use the text-embedding route", param="model")
    params = dashscope_params(gw, spec, body.parameters or {})
    parse_contents = partial(parse_items.each_dashscope_content, spec=spec, limit=gw.caps.max_input_items)
    lease = lease_of(request.scope, gw.memory) if gw.fetcher else None  # fetched media only
    large = is_large(body.input.contents)
    if large:
        await gw.turns.take()
    items = await parse_fetching(
        gw.fetcher, spec, body.input.contents, "input.contents", parse_contents, lease, gw.turns.take
    )
    if params.fusion:
        items = [parse_items.fuse_all(items, spec, "input.contents")]
    if large:
        await gw.turns.take()
    result = await tenancy.embed(request, gw, team, EmbedRequest(spec, params, items))

    def entry(i: int) -> dict[str, Any]:
        return {"index": i, "embedding": VECTOR, "type": _type(items[i].modality)}

    usage = {"input_tokens": result.billed_tokens, "total_tokens": result.billed_tokens}
    return await _respond(request, gw, entry, result, usage)


@router.post(
    routes.TEXT,
    response_model=TextResponse,
    responses=ERRORS,
    openapi_extra=request_body(TextRequest),
    summary="DashScope text embedding (native shape)",
)
async def text_embedding(request: Request) -> Response:
    gw = gateway(request)
    team = tenancy.authenticate(request, gw)
    if "x-dashscope-async" in request.headers:
        return await tasks.create_task(request, team)
    body = await parse(request, TextRequest, gw.caps.max_body_bytes, gw.memory)
    spec = model_for(gw.catalog, team, body.model)
    params = dashscope_params(gw, spec, body.parameters or {})
    large = is_large(body.input.texts)
    if large:
        await gw.turns.take()
    texts = parse_items.each_dashscope_text(body.input.texts, spec, gw.caps.max_input_items)
    items = await collect(texts, gw.turns.take)
    if large:
        await gw.turns.take()
    result = await tenancy.embed(request, gw, team, EmbedRequest(spec, params, items))

    def entry(i: int) -> dict[str, Any]:
        return {"text_index": i, "embedding": VECTOR}

    return await _respond(request, gw, entry, result, {"total_tokens": result.billed_tokens})


# The dashscope SDK, given a local file (`file://...`), asks this route for an upload policy, posts the file to
# cloud storage and sends an oss:// URL. The gateway does not play that part (uploads would have to be kept,
# shared by every replica, until the request naming them arrives): it says what to send instead.
uploads = APIRouter()
LOCAL_FILES = (
    "local files are not uploaded through this gateway: put the file in the item itself as a data URI, "
    'e.g. {"image": "data:image/png;base64,..."}, instead of a file:// path'
)


@uploads.get(
    routes.UPLOADS,
    responses={400: {"model": DashScopeError}, 401: {"model": DashScopeError}},
    summary="The dashscope SDK's upload policy for local files: answered with what to send instead",
)
async def upload_policy(request: Request) -> Response:
    tenancy.authenticate(request, gateway(request))
    raise InvalidRequest(LOCAL_FILES)


def _type(modality: str) -> str:
    return "fused" if modality == "fusion" else modality
