"""The map from an upstream's non-200 answers to gateway errors: upstream 4xx stays 4xx with its code and
message, 401/403 (about the gateway's own key), 3xx (a redirect: a configuration error, never followed) and
5xx become 502, 429 keeps Retry-After (timeouts and
connection failures are mapped where they happen, in http.py). Every configured secret is masked in
messages (app/config/masking.py) before they are cut to length, so no cut leaves a part of one."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..config.masking import mask
from ..errors import GatewayError, RateLimited, UpstreamFailed, UpstreamMisconfigured, UpstreamRejected
from .http import Answer

MAX_MESSAGE = 300


def _retry_after(resp: Answer) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = resp.headers.get(name)
        if value:
            try:
                seconds = float(value) * scale
            except ValueError:
                continue
            if math.isfinite(seconds) and seconds >= 0:
                return min(seconds, 600.0)
    return None


def _target(resp: Answer) -> str:
    """' to scheme://host/path' of a redirect's Location (no query, no credentials: those may be secrets)."""
    try:
        parts = urlsplit(resp.headers.get("location", ""))
        where = f"{parts.scheme}://{parts.hostname}{parts.path}" if parts.scheme and parts.hostname else parts.path
    except ValueError:
        return ""
    return f" to {mask(where)[:MAX_MESSAGE]}" if where else ""


def _clean(message: object) -> str:
    text = message if isinstance(message, str) else ""
    text = mask(" ".join(text.split()))
    return text[:MAX_MESSAGE] or "no message"


def error_from_response(resp: Answer, upstream: str) -> GatewayError:
    """Upstream 4xx stays 4xx with its code and message (401/403 excepted: those are about the gateway's
    own key, so the client gets 502); 429 keeps Retry-After; 5xx becomes 502."""
    code, message = None, None
    try:
        body = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        err: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else body
        code = err.get("code") if isinstance(err.get("code"), str) else None
        message = err.get("message")
    err_ = _error_for(resp, upstream, code, message)
    err_.upstream_status = resp.status
    return err_


def _error_for(resp: Answer, upstream: str, code: str | None, message: object) -> GatewayError:
    status = resp.status
    text = f"upstream {upstream}: {_clean(message)}"
    hint = _retry_after(resp)
    if status == 429:
        limited = RateLimited(text, code=code or "Throttling", dashscope_code=code, retry_after=hint or 1.0)
        limited.upstream_retry_after = hint
        return limited
    if 300 <= status < 400:
        return UpstreamMisconfigured(
            f"upstream {upstream} answered {status}, a redirect{_target(resp)}: the gateway follows no redirect "
            "(a configuration error: set the upstream's base URL to the address it redirects to)",
            code="upstream_redirect",
        )
    if status in (401, 403):
        return UpstreamMisconfigured(
            f"upstream {upstream} refused the gateway's credentials ({code or status})", code="upstream_auth"
        )
    if 400 <= status < 500:
        return UpstreamRejected(text, status=status, code=code, dashscope_code=code or "InvalidParameter")
    failed = UpstreamFailed(text, code=code)
    failed.upstream_retry_after = hint
    return failed
