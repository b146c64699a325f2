"""The one send of every HTTP adapter: POST a JSON body through the upstream's HTTP client (http.py), map
a non-200 answer to a gateway error (failures.py), return the answer's JSON object."""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..errors import UpstreamInvalid
from .failures import error_from_response
from .http import Answer, Poster

_NON_FINITE = re.compile(rb"[\[,:]\s*-?(NaN|Infinity)\b")

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
    """The JSON object of a 200 answer; UpstreamInvalid naming what is wrong with it otherwise."""
    try:
        body = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        if _NON_FINITE.search(answer.body):  # Python's json.dumps writes NaN and Infinity, which JSON is not
            raise UpstreamInvalid(f"upstream {upstream} answered non-finite values (NaN or Infinity)") from None
        raise UpstreamInvalid(f"upstream {upstream} answered a body that is not JSON") from None
    if not isinstance(body, dict):
        raise UpstreamInvalid(f"upstream {upstream} answered a body that is not a JSON object")
    if ("error" in body or "code" in body) and "output" not in body and "data" not in body:
        err = body["error"] if isinstance(body.get("error"), dict) else body
        code = err.get("code")
        named = code[:64] if isinstance(code, str) else "no code"
        raise UpstreamInvalid(f"upstream {upstream} answered an error body with status 200 ({named})")
    return body
