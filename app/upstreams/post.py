"""The one send of every HTTP adapter: POST a JSON body, map transport failures and non-200 answers to
gateway errors, return the answer's JSON object."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from ..errors import UpstreamFailed
from .failures import error_from_response, error_from_transport


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
