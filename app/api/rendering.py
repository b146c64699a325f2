"""Errors rendered for HTTP: the one table from the exception tree (app/errors.py) to status and body, per wire
shape, and the handlers that render every error a route raises (or FastAPI's own 404, 405, validation error,
or a bug) in the caller's wire format."""

from __future__ import annotations

import logging
import math
import uuid
from enum import Enum

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..config.masking import mask
from ..errors import GatewayError, HeadersTooLarge, InvalidRequest, NotFound
from . import routes
from .asgi.aliases import routes_under
from .asgi.exchange import exchange_of

log = logging.getLogger("embedding_gateway.errors")

# The longest Retry-After we send. Clients give up at once on a longer one (LangChain JS retries only when it
# is at most 60 s; the openai SDKs ignore a longer one and back off on their own), and a sliding window of a
# minute counted in one-second buckets frees room up to 61 s later. A client that waits this long and retries
# gets its answer, or a fresh Retry-After for what is left of the wait: limits stay exact.
MAX_RETRY_AFTER_S = 60.0


class Wire(Enum):
    OPENAI = "openai"
    DASHSCOPE = "dashscope"


def wire_of(path: str) -> Wire:
    """DashScope-native routes live under /api/v1; everything else speaks OpenAI."""
    return Wire.DASHSCOPE if path.startswith(routes.DASHSCOPE) else Wire.OPENAI


def request_id_of(request: Request) -> str:
    return exchange_of(request.scope).request_id


def openai_body(err: GatewayError) -> dict[str, object]:
    """The OpenAI wire's error body (also a batch job's error line, app/jobs/)."""
    code = mask(err.code) if err.code else err.code
    return {"error": {"message": mask(err.message), "type": err.openai_type, "param": err.param, "code": code}}


def render(err: GatewayError, wire: Wire, request_id: str) -> Response:
    if wire is Wire.DASHSCOPE:
        body: dict[str, object] = {
            "code": mask(err.dashscope_code),
            "message": mask(err.message),
            "request_id": request_id,
        }
        if err.param:
            body["param"] = err.param
    else:
        body = openai_body(err)
    headers: dict[str, str] = {}  # x-request-id is added to every response by the front layer
    if err.retry_after is not None:
        # Whole seconds, rounded up (a client that waits exactly this long is not refused again for the same
        # reason), and never above a minute (MAX_RETRY_AFTER_S).
        seconds = min(err.retry_after, MAX_RETRY_AFTER_S)
        headers["retry-after"] = str(max(1, math.ceil(seconds)))
        headers["retry-after-ms"] = str(max(1, int(seconds * 1000)))
    return Response(orjson.dumps(body), status_code=err.status, headers=headers, media_type="application/json")


def head_too_large(target: bytes) -> bytes:
    """The whole HTTP answer the server layer writes for a request head that never ends within its cap
    (app/server/protocol.py): a 431 in the wire format of the request line's target, with a new request id
    (the head, and any id in it, was never parsed whole). `target` is the request line's target, b"" when
    even that was not read."""
    err = HeadersTooLarge("request head too large")
    request_id = uuid.uuid4().hex
    response = render(err, wire_of(target.decode("latin-1")), request_id)
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        b"x-request-id: %s\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
        % (request_id.encode(), len(response.body), bytes(response.body))
    )


# pydantic puts the member of a union that failed into `loc` ("fps", "float"); not a field of the request.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "bytes", "list", "dict", "none"})


def field_path(loc: tuple[object, ...]) -> str:
    """("body", "input", 3, "image") -> "input[3].image"; ("fps", "float") -> "fps"."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, str) and (part in _UNION_TAGS or "[" in part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return render(exc, wire_of(request.url.path), request_id_of(request))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = field_path(tuple(first.get("loc", ())))
    err = InvalidRequest(f"{param}: {first.get('msg', 'invalid value')}", param=param)
    return render(err, wire_of(request.url.path), request_id_of(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        err: GatewayError = NotFound(
            f"no route {request.method} {request.url.path}{routes_under(request.url.path)}",
            code="not_found",
            dashscope_code="NotFound",
        )
    elif exc.status_code == 405:
        err = GatewayError(f"method {request.method} not allowed here", status=405, code="method_not_allowed")
        err.openai_type = "invalid_request_error"
    else:
        err = GatewayError("request failed", status=exc.status_code)
    return render(err, wire_of(request.url.path), request_id_of(request))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The one place a bug surfaces: logged with its type only (never its text, which may hold input),
    # answered as a generic 500 in the caller's wire format.
    # It may be sent from outside the front layer (a bug in it), so it names the request id itself.
    log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
    rid = request_id_of(request)
    response = render(GatewayError("internal error"), wire_of(request.url.path), rid)
    response.headers["x-request-id"] = rid
    return response


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
