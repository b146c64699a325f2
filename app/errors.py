"""One exception tree: every error a client may see, with its status and its codes per wire shape.

Routes never catch: they raise a GatewayError (or let one propagate) and the handlers of app/api/rendering.py
render it in the caller's wire format. Messages are written for clients: never `str(exc)` of a lower-level
exception, never a key, never an internal name. Nothing here imports HTTP, the routes or the front layers.
"""

from __future__ import annotations

from typing import Any


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


class HeadersTooLarge(InvalidRequest):
    """A request head over the header caps (too many headers, too many bytes, or a head that never ends)."""

    status = 431
    openai_code = "headers_too_large"
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


class InsufficientQuota(GatewayError):
    """A team's budget is spent (app/usage/budget.py): OpenAI's code for a spent account, DashScope's for
    one in arrears. Clients that know the code stop retrying at once."""

    status = 429
    openai_type = "insufficient_quota"
    openai_code = "insufficient_quota"
    dashscope_code = "Arrearage"


class OverLimit(RateLimited):
    """The request alone is larger than one of its team's limits: it can never pass, waiting cannot help
    (the caller splits it)."""


class OverShare(RateLimited):
    """The caller's team holds its share of the process's memory budget (app/runtime/budget.py): its own
    large requests and unread answers must end first."""


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


class UpstreamMisconfigured(UpstreamFailed):
    """The upstream refused the deployment's configuration: its credentials (401 or 403, code upstream_auth)
    or its address (a 3xx, code upstream_redirect, never followed). The upstream is up: not a failure for its
    breaker, never sent again to the same deployment; another deployment may serve the call."""


class UpstreamTimeout(UpstreamFailed):
    status = 504
    openai_code = "upstream_timeout"
    dashscope_code = "RequestTimeOut"


class Unavailable(GatewayError):
    status = 503
    openai_type = "server_error"
    openai_code = "service_unavailable"
    dashscope_code = "ServiceUnavailable"


class MemoryFull(Unavailable):
    """The process's memory budget had no room for a request's data within its wait (app/runtime/budget.py)."""


NO_ROOM = (MemoryFull, OverShare)  # the memory budget's refusals: the whole budget, or the team's share
