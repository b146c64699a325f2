"""The one send of every HTTP adapter: POST a JSON body through the upstream's HTTP client (http.py), map
a non-200 answer to a gateway error (failures.py), return the answer's JSON object."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import UpstreamFailed
from .failures import error_from_response
from .http import Answer, Poster

# The JSON of one float is at most ~25 characters ("-1.2345678901234567e-05,"): an answer of n vectors of
# `dim` numbers fits in this many bytes, with room for indices, usage and whitespace.
BYTES_PER_NUMBER = 32
BYTES_PER_ROW = 1024
BYTES_OVERHEAD = 64 * 1024


def answer_budget(n: int, dim: int) -> int:
    """The most bytes a well-formed answer of `n` vectors of `dim` dimensions can take (the size cap)."""
    return BYTES_OVERHEAD + n * (dim * BYTES_PER_NUMBER + BYTES_PER_ROW)


async def post_json(
    http: Poster, url: str, body: dict[str, Any], headers: dict[str, str], upstream: str, *, max_bytes: int
) -> dict[str, Any]:
    answer = await http.post(url, orjson.dumps(body), headers, max_bytes=max_bytes)
    if answer.status != 200:
        raise error_from_response(answer, upstream)
    return parse_json(answer, upstream)


def parse_json(answer: Answer, upstream: str) -> dict[str, Any]:
    try:
        body = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        raise UpstreamFailed(f"upstream {upstream} answered a body that is not JSON") from None
    if not isinstance(body, dict):
        raise UpstreamFailed(f"upstream {upstream} answered a body that is not a JSON object")
    return body
