"""What every upstream adapter shares: the batch it is given, the result it returns, the checks every
answer passes before it is used or cached, and the map from HTTP failures to gateway errors.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import numpy as np
import orjson

from ..catalog import ModelSpec
from ..errors import GatewayError, RateLimited, UpstreamFailed, UpstreamRejected, UpstreamTimeout
from ..items import Item
from ..params import Params

MAX_MESSAGE = 300
# Key-like words an upstream may echo in a message (OpenAI-style sk- keys, bearer tokens): masked before a
# message reaches a client or a log.
_KEYLIKE = re.compile(r"(?i)\b(sk-|bearer\s+|api[_-]?key[=:]\s*)[A-Za-z0-9._~+/=-]{4,}")


@dataclass(frozen=True, slots=True)
class Batch:
    spec: ModelSpec
    params: Params
    items: Sequence[Item]


@dataclass(frozen=True, slots=True)
class Result:
    vectors: np.ndarray  # (len(items), dimension), float32, rows in item order
    billed_tokens: int


class Upstream(Protocol):
    name: str
    kind: str

    async def embed(self, batch: Batch) -> Result: ...

    async def close(self) -> None: ...


def assemble(pairs: Iterable[tuple[Any, Any]], n: int, dim: int, upstream: str) -> np.ndarray:
    """(index, vector) pairs in any order -> rows in item order; count, indices, length, finite checked.

    A JSON list of numbers is packed by `struct` (about twice as fast as numpy's conversion of a list of
    Python floats: it is most of the gateway's own work on a miss); both round to the nearest float32."""
    rows: list[Any] = [None] * n
    seen = 0
    for index, vector in pairs:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n or rows[index] is not None:
            raise UpstreamFailed(f"upstream {upstream} answered a bad or duplicate index")
        rows[index] = vector
        seen += 1
    if seen != n:
        raise UpstreamFailed(f"upstream {upstream} answered {seen} vectors for {n} inputs")
    packer = struct.Struct(f"<{dim}f")
    out = bytearray()
    for row in rows:
        if isinstance(row, list):
            if len(row) != dim:
                raise UpstreamFailed(f"upstream {upstream} answered vectors of the wrong length (expected {dim})")
            try:
                out += packer.pack(*row)
            except OverflowError:  # a number beyond float32
                raise UpstreamFailed(f"upstream {upstream} answered non-finite values") from None
            except (struct.error, TypeError):
                raise UpstreamFailed(f"upstream {upstream} answered vectors that are not lists of numbers") from None
        else:  # decoded base64, or the local model's rows
            try:
                with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
                    array = np.asarray(row, dtype="<f4")
            except (ValueError, TypeError):
                raise UpstreamFailed(f"upstream {upstream} answered vectors that are not lists of numbers") from None
            if array.shape != (dim,):
                raise UpstreamFailed(f"upstream {upstream} answered vectors of the wrong length (expected {dim})")
            out += array.tobytes()
    vectors = np.frombuffer(out, dtype="<f4").reshape(n, dim)
    if not np.isfinite(vectors).all():
        raise UpstreamFailed(f"upstream {upstream} answered non-finite values")
    return vectors


def decode_base64_vector(value: str, dim: int, upstream: str) -> list[float] | np.ndarray:
    import base64

    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raise UpstreamFailed(f"upstream {upstream} answered invalid base64") from None
    if len(raw) != 4 * dim:
        raise UpstreamFailed(f"upstream {upstream} answered vectors of the wrong length (expected {dim})")
    return np.frombuffer(raw, dtype="<f4")


async def post_json(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str], upstream: str
) -> dict[str, Any]:
    """The one send of every HTTP adapter: POST a JSON body, map transport failures and non-200 answers to
    gateway errors, return the answer's JSON object."""
    try:
        resp = await client.post(url, content=orjson.dumps(body), headers=headers)
    except httpx.HTTPError as exc:
        raise error_from_transport(exc, upstream) from None
    if resp.status_code != 200:
        raise error_from_response(resp, upstream)
    return parse_json(resp, upstream)


def parse_json(resp: httpx.Response, upstream: str) -> dict[str, Any]:
    try:
        body = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        raise UpstreamFailed(f"upstream {upstream} answered a body that is not JSON") from None
    if not isinstance(body, dict):
        raise UpstreamFailed(f"upstream {upstream} answered a body that is not a JSON object")
    return body


def _retry_after(resp: httpx.Response) -> float | None:
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


def _clean(message: object) -> str:
    text = message if isinstance(message, str) else ""
    text = _KEYLIKE.sub(lambda m: m.group(1) + "***", " ".join(text.split()))
    return text[:MAX_MESSAGE] or "no message"


def error_from_response(resp: httpx.Response, upstream: str) -> GatewayError:
    """Upstream 4xx stays 4xx with its code and message (401/403 excepted: those are about the gateway's
    own key, so the client gets 502); 429 keeps Retry-After; 5xx becomes 502."""
    code, message = None, None
    try:
        body = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        err: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else body
        code = err.get("code") if isinstance(err.get("code"), str) else None
        message = err.get("message")
    err_ = _error_for(resp, upstream, code, message)
    err_.upstream_status = resp.status_code
    return err_


def _error_for(resp: httpx.Response, upstream: str, code: str | None, message: object) -> GatewayError:
    status = resp.status_code
    text = f"upstream {upstream}: {_clean(message)}"
    hint = _retry_after(resp)
    if status == 429:
        limited = RateLimited(text, code=code or "Throttling", dashscope_code=code, retry_after=hint or 1.0)
        limited.upstream_retry_after = hint
        return limited
    if status in (401, 403):
        return UpstreamFailed(
            f"upstream {upstream} refused the gateway's credentials ({code or status})", code="upstream_auth"
        )
    if 400 <= status < 500:
        return UpstreamRejected(text, status=status, code=code, dashscope_code=code or "InvalidParameter")
    failed = UpstreamFailed(text, code=code)
    failed.upstream_retry_after = hint
    return failed


def error_from_transport(exc: httpx.HTTPError, upstream: str) -> GatewayError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"upstream {upstream} did not answer in time")
    return UpstreamFailed(f"upstream {upstream} could not be reached ({type(exc).__name__})")


def usage_tokens(usage: object) -> int:
    """Billed tokens from any of the usage shapes of upstream-contracts.md 1.2-1.3 and 2."""
    if not isinstance(usage, dict):
        return 0
    for key in ("total_tokens", "prompt_tokens"):
        v = usage.get(key)
        if isinstance(v, int) and v >= 0:
            return v
    return sum(v for k in ("input_tokens", "image_tokens") if isinstance(v := usage.get(k), int) and v >= 0)
