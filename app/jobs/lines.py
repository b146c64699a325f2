"""The lines of a batch: input lines read from a stream (each at most `max_line_bytes`), parsed and checked
as the OpenAI Batch API takes them, and output/error lines in OpenAI's shapes.

An input line is `{"custom_id", "method": "POST", "url": "/v1/embeddings", "body": <an embeddings
request>}`. A line that is not that (not JSON, no custom_id, another url) or whose body the gateway
refuses (the same checks as `POST /v1/embeddings`, the error naming the field) goes to the error file and
counts as failed; it never reaches the cache or the upstream.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from pydantic import ValidationError

from ..api import routes
from ..api.answer import slice_of, sliced
from ..api.rendering import field_path, openai_body
from ..api.vectortext import VectorText
from ..config.catalog import ModelSpec
from ..errors import NO_ROOM, GatewayError, InvalidRequest
from ..inputs import items as parse_items
from ..inputs.items import Item
from ..inputs.media.inlining import parse_fetching
from ..inputs.params import Params, resolve
from ..runtime.budget import Lease
from ..schemas.openai import EmbeddingRequest, document, entry
from ..service import EmbedResult
from ..teams.team import Team, model_for
from .host import Host

ENDPOINT = routes.EMBEDDINGS


@dataclass(slots=True)
class Line:
    """One valid request of the batch."""

    custom_id: str
    spec: ModelSpec
    params: Params
    items: list[Item]
    base64: bool


async def split_lines(chunks: AsyncIterable[bytes], max_bytes: int) -> AsyncIterator[bytes | None]:
    """The non-blank lines of a stream; None for a line longer than `max_bytes` (its bytes dropped)."""
    buf = bytearray()
    skipping = False
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if skipping or len(buf) + end - start > max_bytes:
                yield None
            else:
                buf += chunk[start:end]
                if buf.strip():
                    yield bytes(buf)
            buf.clear()
            skipping = False
            start = end + 1
        if not skipping:
            buf += chunk[start:]
            if len(buf) > max_bytes:
                skipping = True
                buf.clear()
    if skipping:
        yield None
    elif buf.strip():
        yield bytes(buf)


def request_id() -> str:
    return "req_" + secrets.token_hex(12)


def error_line(custom_id: str | None, err: GatewayError) -> bytes:
    """A refused request: OpenAI's error-file line with the status and body the endpoint would answer."""
    response = {"status_code": err.status, "request_id": request_id(), "body": openai_body(err)}
    return _line(custom_id, response, None)


def format_error(custom_id: str | None, message: str) -> bytes:
    """A line that is not a request at all."""
    return _line(custom_id, None, {"code": "invalid_request", "message": message})


async def render(result: EmbedResult, model: str, text: VectorText) -> bytes:
    """The whole answer, as bytes (a line of a batch's output file: app/jobs/), the OpenAI route's document.
    Rendered a slice (SLICE_BYTES) at a time, one per loop turn, as the route writes a large answer: jobs
    run in the gateway's processes, and 2,048 vectors of 1,024 floats rendered at once held the event loop,
    so every request of the process, for ~140 ms."""
    facts, vectors = (model, result.billed_tokens), result.vectors
    if not vectors:
        return orjson.dumps(document([], facts))
    parts = []
    for n, part in enumerate(sliced(document, facts, entry, vectors, text, slice_of(vectors, text)[1])):
        if n:
            await asyncio.sleep(0)
        parts.append(part)
    return b"".join(parts)


def ok_line(custom_id: str, body: bytes) -> bytes:
    """`body`: the embeddings response, rendered (render above)."""
    head = _line(custom_id, {"status_code": 200, "request_id": request_id(), "body": None}, None)
    return head.replace(b'"body":null', b'"body":' + body, 1)


def _line(custom_id: str | None, response: Any, error: Any) -> bytes:
    doc = {"id": "batch_req_" + secrets.token_hex(12), "custom_id": custom_id, "response": response, "error": error}
    return orjson.dumps(doc) + b"\n"


async def parse_line(host: Host, team: Team | None, n: int, raw: bytes | None, max_bytes: int,
                     lease: Lease | None = None, wait: bool = False) -> Line | bytes:  # fmt: skip
    """A Line, or the error line that takes its place (`raw` None: longer than `max_bytes`). Its fetched media
    are taken from `lease`; with `wait`, no room in the memory budget raises (the runner waits for room)."""
    if raw is None:
        return format_error(None, f"line {n}: longer than {max_bytes} bytes")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return format_error(None, f"line {n}: not valid JSON")
    if not isinstance(doc, dict):
        return format_error(None, f"line {n}: not a JSON object")
    cid = doc.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return format_error(None, f"line {n}: custom_id: required, a non-empty string")
    if doc.get("method") != "POST" or doc.get("url") != ENDPOINT:
        return format_error(cid, f"line {n}: method and url: must be POST {ENDPOINT} (the batch's endpoint)")
    try:
        return await _request(host, team, cid, doc.get("body"), lease)
    except GatewayError as err:
        if wait and isinstance(err, NO_ROOM):
            raise
        return error_line(cid, err)


async def _request(host: Host, team: Team | None, cid: str, body: object, lease: Lease | None) -> Line:
    if not isinstance(body, dict):
        raise InvalidRequest("body: required, a JSON object", param="body")
    try:
        req = EmbeddingRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = field_path(tuple(first.get("loc", ())))
        raise InvalidRequest(f"{param}: {first.get('msg', 'invalid value')}", param=param) from None
    spec = model_for(host.catalog, team, req.model)
    kind = host.upstream_kinds[spec.upstream]
    params = resolve(spec, kind, req.dimensions, req.options(), dim_param="dimensions", opt_prefix="",
                     forward_unknown=False)  # fmt: skip
    parse = partial(parse_items.each_openai_item, spec=spec, limit=host.caps.max_input_items)
    items = await parse_fetching(host.fetcher, spec, req.input, "input", parse, lease)
    if params.fusion:
        items = [parse_items.fuse_all(items, spec, "input")]
    return Line(cid, spec, params, items, req.encoding_format == "base64")
