"""Request bodies: read within the size cap (inflated first when sent with Content-Encoding gzip or deflate),
parsed as JSON whatever the Content-Type (curl -d sends form encoding), validated into a wire model with
errors that name the field."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from ..errors import ClientClosed, InvalidRequest, PayloadTooLarge
from ..runtime.budget import SMALL_BODY_BYTES, MemoryBudget
from .asgi.exchange import lease_of
from .encodings import Inflater, coding_of
from .rendering import field_path

M = TypeVar("M", bound=BaseModel)
HEAD_KEY = "gateway.head"


def head_of(request: Request) -> dict[str, str]:
    """The request's headers, decoded once per request into a dict (the first of a repeated name, as
    Starlette's `headers.get` finds it): the hot routes read three or four of them, and each `get` of
    Starlette's Headers decodes the names one by one again."""
    scope = request.scope
    head: dict[str, str] | None = scope.get(HEAD_KEY)
    if head is None:
        head = scope[HEAD_KEY] = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
    return head


async def read_body(request: Request, limit: int, budget: MemoryBudget | None = None) -> bytes:
    """The body, read from the ASGI messages themselves (Starlette's `stream()` is an async generator:
    measurable on a cache hit); refused as soon as it is known to be over `limit`, as sent and, when it came
    compressed (gzip, deflate: encodings.py), as inflated. A body larger than SMALL_BODY_BYTES is taken from
    the memory budget (twice: the bytes and what is parsed from them; a compressed one by its inflated size)."""
    coding = coding_of(value for name, value in request.scope["headers"] if name == b"content-encoding")
    declared = head_of(request).get("content-length")
    if declared is not None and declared.isdigit():
        length = int(declared)
        if length > limit:
            raise PayloadTooLarge(f"body: larger than {limit} bytes", param="body")
        if coding is None and length > SMALL_BODY_BYTES and budget is not None:
            await lease_of(request.scope, budget).take(2 * length, "body")
            budget = None  # taken
    inflater = Inflater(coding, limit) if coding else None
    chunks: list[bytes] = []
    size = sent = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientClosed(
                "body: the client closed the connection before sending all of it",
                param="body",
                code="client_closed_request",
            )
        chunk = message.get("body", b"")
        sent += len(chunk)
        if sent > limit:
            raise PayloadTooLarge(f"body: larger than {limit} bytes", param="body")
        parts = [chunk] if inflater is None else inflater.feed(chunk)
        for part in parts:
            size += len(part)
            if budget is not None and size > SMALL_BODY_BYTES:  # no length known: taken as it comes
                await lease_of(request.scope, budget).take(2 * len(part), "body")
        chunks += parts
        if not message.get("more_body", False):
            if inflater is not None:
                inflater.finish()
            return b"".join(chunks)  # one chunk (the usual case) is returned as it is, not copied


async def parse(request: Request, model: type[M], limit: int, budget: MemoryBudget | None = None) -> M:
    return validated(model, await read_object(request, limit, budget))


async def read_object(request: Request, limit: int, budget: MemoryBudget | None = None) -> dict[str, Any]:
    """The body as a JSON object, not yet validated."""
    raw = await read_body(request, limit, budget)
    if not raw:
        raise InvalidRequest("body: a JSON object is required", param="body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("body: not valid JSON (or not UTF-8)", param="body") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body: must be a JSON object", param="body")
    return data


def validated(model: type[M], data: dict[str, Any]) -> M:
    """`data` validated into `model`; the first error names its field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        param = field_path(tuple(first["loc"]))
        raise InvalidRequest(f"{param}: {first['msg']}", param=param) from None


def cache_control(request: Request) -> tuple[bool, bool]:
    """Cache-Control: no-cache skips the cache read, no-store skips the write."""
    value = head_of(request).get("cache-control", "").lower()
    return "no-cache" not in value, "no-store" not in value
