"""One exception tree and one table from exception to status and body, per wire shape.

Routes never catch: they raise a GatewayError (or let one propagate) and the handlers installed by
`install_handlers` render it in the caller's wire format. Messages are written for clients: never
`str(exc)` of a lower-level exception, never a key, never an internal name.
"""

from __future__ import annotations

import logging
import math
from enum import Enum
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .api.asgi.aliases import routes_under
from .api.asgi.exchange import exchange_of
from .config.masking import mask

log = logging.getLogger("embedding_gateway.errors")

# The longest Retry-After we send. Clients give up at once on a longer one (LangChain JS retries only when it
# is at most 60 s; the openai SDKs ignore a longer one and back off on their own), and a sliding window of a
# minute counted in one-second buckets frees room up to 61 s later. A client that waits this long and retries
# gets its answer, or a fresh Retry-After for what is left of the wait: limits stay exact.
MAX_RETRY_AFTER_S = 60.0


class Wire(Enum):
    OPENAI = "openai"
    DASHSCOPE = "dashscope"


class GatewayError(Exception):
    """Base of every error a client may see. `status` and the codes come from the table below.

    `code` is the OpenAI wire's `error.code` (the class's `openai_code` unless given: never null, as OpenAI's
    own errors, whose `type` and `code` clients branch on); the DashScope wire's `code` is `dashscope_code`
    (the class's, unless given), so a DashScope client always sees a DashScope-style code (`ModelNotFound`,
    not `model_not_found`)."""

    status = 500
    openai_type = "server_error"
    openai_code = "internal_error"  # the OpenAI wire's `error.code` unless the error names its own
    dashscope_code = "InternalError"
    upstream_status: int | None = None  # the upstream's own HTTP status, when this error is its answer
    upstream_retry_after: float | None = None  # the upstream's own Retry-After, when it sent one

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        dashscope_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.openai_code
        self.retry_after = retry_after
        if dashscope_code is not None:
            self.dashscope_code = dashscope_code
        if status is not None:
            self.status = status


class InvalidRequest(GatewayError):
    status = 400
    openai_type = "invalid_request_error"
    openai_code = "invalid_value"
    dashscope_code = "InvalidParameter"


class PayloadTooLarge(InvalidRequest):
    status = 413
    openai_code = "request_too_large"
    dashscope_code = "BadRequest.TooLarge"


class UnsupportedEncoding(InvalidRequest):
    """A request body in a Content-Encoding the gateway does not inflate (it takes gzip and deflate)."""

    status = 415
    openai_code = "unsupported_content_encoding"
    dashscope_code = "BadRequest.UnsupportedEncoding"


class ClientClosed(InvalidRequest):
    """The client went away before its whole body arrived (nginx's 499): nobody reads the answer; it is
    counted and logged as a 4xx, not as a fault of the gateway."""

    status = 499
    openai_code = "client_closed"
    dashscope_code = "BadRequest.ClientClosed"


class Unauthorized(GatewayError):
    status = 401
    openai_type = "authentication_error"
    openai_code = "invalid_api_key"
    dashscope_code = "InvalidApiKey"


class Forbidden(GatewayError):
    status = 403
    openai_type = "permission_error"
    openai_code = "model_not_allowed"
    dashscope_code = "AccessDenied"


class NotFound(GatewayError):
    status = 404
    openai_type = "invalid_request_error"
    openai_code = "model_not_found"
    dashscope_code = "ModelNotFound"


class RateLimited(GatewayError):
    """Always `rate_limit_exceeded` on the OpenAI wire, as OpenAI answers (clients branch on it); on the
    DashScope wire the upstream's own `Throttling.*` code when it sent one, else `Throttling.RateQuota`."""

    status = 429
    openai_type = "rate_limit_error"
    openai_code = "rate_limit_exceeded"
    dashscope_code = "Throttling.RateQuota"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.code = self.openai_code
        if not self.dashscope_code.startswith("Throttling"):
            self.dashscope_code = RateLimited.dashscope_code


class OverLimit(RateLimited):
    """The request alone is larger than one of its team's limits: it can never pass, waiting cannot help
    (the caller splits it)."""


class UpstreamRejected(GatewayError):
    """The upstream answered 4xx: the status, code and message are the upstream's own."""

    openai_type = "invalid_request_error"
    openai_code = "upstream_rejected"


class UpstreamFailed(GatewayError):
    """The upstream answered 5xx, garbage, or could not be reached."""

    status = 502
    openai_type = "upstream_error"
    openai_code = "upstream_error"
    dashscope_code = "InternalError.Upstream"


class UpstreamInvalid(UpstreamFailed):
    """The upstream answered 200 with something that breaks its contract (a poison answer: wrong count,
    duplicate index, wrong length, NaN, invalid JSON, an error body, too large). The same batch would be
    answered the same way: never retried against the same deployment, and not a failure of the upstream
    for its breaker (its other models are fine)."""

    upstream_status = 200


class UpstreamTimeout(UpstreamFailed):
    status = 504
    openai_code = "upstream_timeout"
    dashscope_code = "RequestTimeOut"


class Unavailable(GatewayError):
    status = 503
    openai_type = "server_error"
    openai_code = "service_unavailable"
    dashscope_code = "ServiceUnavailable"


def wire_of(path: str) -> Wire:
    """DashScope-native routes live under /api/v1; everything else speaks OpenAI."""
    return Wire.DASHSCOPE if path.startswith("/api/") else Wire.OPENAI


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
    headers: dict[str, str] = {}  # x-request-id is added to every response by the Observe middleware
    if err.retry_after is not None:
        # Whole seconds, rounded up (a client that waits exactly this long is not refused again for the same
        # reason), and never above a minute (MAX_RETRY_AFTER_S).
        seconds = min(err.retry_after, MAX_RETRY_AFTER_S)
        headers["retry-after"] = str(max(1, math.ceil(seconds)))
        headers["retry-after-ms"] = str(max(1, int(seconds * 1000)))
    return Response(orjson.dumps(body), status_code=err.status, headers=headers, media_type="application/json")


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
    # It is sent from outside the Observe middleware, so it names the request id itself.
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
