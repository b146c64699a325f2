"""Request bodies: read within the size cap, parsed as JSON whatever the Content-Type (curl -d sends
form encoding), validated into a wire model with errors that name the field."""

from __future__ import annotations

from typing import TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from ..errors import ClientClosed, InvalidRequest, PayloadTooLarge, field_path
from ..runtime.budget import SMALL_BODY_BYTES, MemoryBudget, lease_of

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, limit: int, budget: MemoryBudget | None = None) -> bytes:
    """The body, read from the ASGI messages themselves (Starlette's `stream()` is an async generator:
    measurable on a cache hit); refused as soon as it is known to be over `limit`. A body larger than
    SMALL_BODY_BYTES is taken from the memory budget (twice: the bytes and what is parsed from them)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        length = int(declared)
        if length > limit:
            raise PayloadTooLarge(f"body: larger than {limit} bytes", param="body")
        if length > SMALL_BODY_BYTES and budget is not None:
            await lease_of(request.scope, budget).take(2 * length, "body")
            budget = None  # taken
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientClosed(
                "body: the client closed the connection before sending all of it",
                param="body",
                code="client_closed_request",
            )
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body: larger than {limit} bytes", param="body")
        if budget is not None and size > SMALL_BODY_BYTES:  # no length declared: taken as it comes
            await lease_of(request.scope, budget).take(2 * len(chunk), "body")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)  # one chunk (the usual case) is returned as it is, not copied


async def parse(request: Request, model: type[M], limit: int, budget: MemoryBudget | None = None) -> M:
    raw = await read_body(request, limit, budget)
    if not raw:
        raise InvalidRequest("body: a JSON object is required", param="body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("body: not valid JSON (or not UTF-8)", param="body") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body: must be a JSON object", param="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        param = field_path(tuple(first["loc"]))
        raise InvalidRequest(f"{param}: {first['msg']}", param=param) from None


def cache_control(request: Request) -> tuple[bool, bool]:
    """Cache-Control: no-cache skips the cache read, no-store skips the write."""
    value = request.headers.get("cache-control", "").lower()
    return "no-cache" not in value, "no-store" not in value
