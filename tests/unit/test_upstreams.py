"""Upstream adapters over an in-process HTTP client (MockPoster: a handler over httpx's request and response
types; the real client, aiohttp's, is tested against servers in test_upstream_http): the request each
sends, the checks every answer passes (count, indices, length, finite values) and the map from upstream
failures to gateway errors."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from app.errors import (
    GatewayError,
    RateLimited,
    UpstreamFailed,
    UpstreamInvalid,
    UpstreamMisconfigured,
    UpstreamRejected,
)
from app.inputs.items import fuse_all, openai_items
from app.inputs.params import Params
from app.upstreams.adapter import Batch
from app.upstreams.answers import usage_tokens
from app.upstreams.caller import upstream_status
from app.upstreams.dashscope import MULTIMODAL_PATH, TEXT_PATH, DashScopeUpstream
from app.upstreams.http import Answer, AnswerTooLarge
from app.upstreams.openai import OpenAIUpstream
from tests.support.samples import PLUS, QWEN, SMALL, V4

KEY = "sk-adapter-secret"
Handler = Callable[[httpx.Request], httpx.Response]


def vec(i: int, dim: int) -> list[float]:
    return [float(i)] * dim


class MockPoster:
    """The adapters' HTTP client (upstreams/http.Poster), answered in process by `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, max_bytes: int) -> Answer:
        resp = self.handler(httpx.Request("POST", url, content=body, headers=dict(headers)))
        if resp.status_code == 200 and len(resp.content) > max_bytes:
            raise AnswerTooLarge(f"upstream answered more than {max_bytes} bytes")
        return Answer(resp.status_code, resp.headers, resp.content)

    async def close(self) -> None:
        return None


def dashscope(handler: Handler, workspace: str | None = None) -> DashScopeUpstream:
    return DashScopeUpstream("dashscope", MockPoster(handler), "http://up/api/v1/", KEY, workspace)


def openai(handler: Handler, key: str | None = KEY) -> OpenAIUpstream:
    return OpenAIUpstream("openai", MockPoster(handler), "http://up/v1", key)


def answer(embeddings: list[dict[str, Any]], status: int = 200, **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"output": {"embeddings": embeddings}, "usage": {"total_tokens": 7}, **extra})


async def test_dashscope_text_request_and_shuffled_answer() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return answer([{"text_index": i, "embedding": vec(i, 64)} for i in (2, 0, 1)])

    batch = Batch(V4, Params(64, True, {"text_type": "query"}), openai_items(["a", "b", "c"], V4, 10))
    result = await dashscope(handler, workspace="ws-1").embed(batch)
    np.testing.assert_array_equal(result.vectors[:, 0], [0, 1, 2])
    assert result.vectors.dtype == np.float32 and result.billed_tokens == 7
    (req,) = seen
    assert str(req.url) == "http://up/api/v1" + TEXT_PATH
    assert req.headers["authorization"] == f"Bearer {KEY}" and req.headers["x-dashscope-workspace"] == "ws-1"
    assert "x-dashscope-async" not in req.headers
    assert orjson.loads(req.content) == {
        "model": "text-embedding-v4",
        "input": {"texts": ["a", "b", "c"]},
        "parameters": {"text_type": "query", "dimension": 64},
    }


async def test_dashscope_multimodal_and_fusion_requests() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        body = orjson.loads(req.content)
        bodies.append(body)
        assert req.url.path == "/api/v1" + MULTIMODAL_PATH
        n = len(body["input"]["contents"]) if not body["parameters"].get("enable_fusion") else 1
        return answer([{"index": i, "embedding": vec(i, 1152), "type": "text"} for i in range(n)])

    items = openai_items(["a", {"image": "https://e.com/x.png"}], PLUS, 10)
    await dashscope(handler).embed(Batch(PLUS, Params(1152, False), items))
    assert bodies[0] == {
        "model": "tongyi-embedding-vision-plus",
        "input": {"contents": [{"text": "a"}, {"image": "https://e.com/x.png"}]},
        "parameters": {},
    }
    qwen = [fuse_all(openai_items(["a", {"image": "https://e.com/x.png"}], QWEN, 10), QWEN, "input")]
    result = await dashscope(handler).embed(Batch(QWEN, Params(1152, True, {"enable_fusion": True}), qwen))
    assert result.vectors.shape == (1, 1152)
    assert bodies[1]["input"]["contents"] == [{"text": "a"}, {"image": "https://e.com/x.png"}]


@pytest.mark.parametrize(
    "embeddings",
    [
        [{"text_index": 0, "embedding": vec(0, 64)}],  # one missing
        [{"text_index": 0, "embedding": vec(0, 64)}, {"text_index": 0, "embedding": vec(0, 64)}],  # duplicate
        [{"text_index": 0, "embedding": vec(0, 64)}, {"text_index": 2, "embedding": vec(0, 64)}],  # out of range
        [{"text_index": 0, "embedding": vec(0, 64)}, {"text_index": True, "embedding": vec(0, 64)}],
        [{"text_index": 0, "embedding": vec(0, 64)}, {"text_index": "1", "embedding": vec(0, 64)}],
        [{"text_index": 0, "embedding": vec(0, 64)}, {"text_index": 1, "embedding": vec(0, 63)}],  # length
        [{"text_index": 0, "embedding": vec(0, 64)}, {"text_index": 1, "embedding": ["x"] * 64}],
        [{"text_index": 0, "embedding": vec(0, 64)}, {"text_index": 1}],
        [{"text_index": 0, "embedding": vec(0, 64)}, "garbage"],
        [{"text_index": 0, "embedding": vec(0, 64)}, *[{"text_index": 1, "embedding": vec(0, 64)}] * 2],
    ],
)
async def test_bad_answers_are_refused(embeddings: list[Any]) -> None:
    batch = Batch(V4, Params(64, True), openai_items(["a", "b"], V4, 10))
    with pytest.raises(UpstreamInvalid) as info:
        await dashscope(lambda req: answer(embeddings)).embed(batch)
    assert info.value.status == 502


async def test_non_finite_values_and_non_json_are_refused() -> None:
    batch = Batch(V4, Params(64, True), openai_items(["a"], V4, 10))
    inf = b'{"output": {"embeddings": [{"text_index": 0, "embedding": [1e39' + b", 0.0" * 63 + b"]}]}}"
    # 1e39 is a finite JSON number but overflows float32 to inf
    with pytest.raises(UpstreamInvalid, match="non-finite"):
        await dashscope(lambda req: httpx.Response(200, content=inf)).embed(batch)
    nan = b'{"output": {"embeddings": [{"text_index": 0, "embedding": [NaN' + b", 0.0" * 63 + b"]}]}}"
    with pytest.raises(UpstreamInvalid, match=r"non-finite values \(NaN or Infinity\)"):
        await dashscope(lambda req: httpx.Response(200, content=nan)).embed(batch)
    with pytest.raises(UpstreamInvalid, match="not JSON"):
        await dashscope(lambda req: httpx.Response(200, content=b"<html>")).embed(batch)
    with pytest.raises(UpstreamInvalid, match="not a JSON object"):
        await dashscope(lambda req: httpx.Response(200, json=[1, 2])).embed(batch)


@pytest.mark.parametrize(
    "body",
    [
        {"code": "InternalError", "message": "try later", "request_id": "r"},
        {"error": {"code": "server_error", "message": "busy", "type": "server_error"}},
        {"error": "overloaded"},
    ],
)
async def test_an_error_body_with_status_200_is_a_poison_answer(body: dict[str, Any]) -> None:
    batch = Batch(V4, Params(64, True), openai_items(["a"], V4, 10))
    with pytest.raises(UpstreamInvalid, match="error body with status 200") as info:
        await dashscope(lambda req: httpx.Response(200, json=body)).embed(batch)
    assert info.value.status == 502 and upstream_status(info.value) == "200"
    with pytest.raises(UpstreamInvalid, match="error body with status 200"):
        await openai(lambda req: httpx.Response(200, json=body)).embed(Batch(SMALL, Params(8, True), batch.items))


async def test_an_answer_past_its_batch_budget_is_refused() -> None:
    batch = Batch(V4, Params(64, True), openai_items(["a"], V4, 10))
    huge = [{"text_index": 0, "embedding": vec(0, 64), "pad": "x" * 200_000}]
    with pytest.raises(AnswerTooLarge):
        await dashscope(lambda req: answer(huge)).embed(batch)


def fail(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    return lambda req: httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("handler", "kind", "status", "code"),
    [
        (
            fail(429, {"code": "Throttling.RateQuota", "message": "slow down"}, {"retry-after": "7"}),
            RateLimited,
            429,
            "rate_limit_exceeded",  # the OpenAI wire's code; the DashScope wire keeps the upstream's
        ),
        (fail(400, {"code": "InvalidParameter", "message": "bad"}), UpstreamRejected, 400, "InvalidParameter"),
        (fail(404, {"code": "ModelNotFound", "message": "no model"}), UpstreamRejected, 404, "ModelNotFound"),
        (
            fail(401, {"code": "InvalidApiKey", "message": f"Invalid API-key provided: {KEY}"}),
            UpstreamMisconfigured,
            502,
            "upstream_auth",
        ),
        (fail(403, {"code": "AccessDenied", "message": "no"}), UpstreamMisconfigured, 502, "upstream_auth"),
        (fail(500, {"code": "InternalError", "message": "oops"}), UpstreamFailed, 502, "InternalError"),
        (fail(503, {"code": "ModelUnavailable", "message": "later"}), UpstreamFailed, 502, "ModelUnavailable"),
        (lambda req: httpx.Response(502, content=b"<html>bad gateway</html>"), UpstreamFailed, 502, "upstream_error"),
    ],
)
async def test_failures_map_to_gateway_errors(
    handler: Handler, kind: type[GatewayError], status: int, code: str
) -> None:
    batch = Batch(V4, Params(64, True), openai_items(["a"], V4, 10))
    with pytest.raises(kind) as info:
        await dashscope(handler).embed(batch)
    err = info.value
    assert err.status == status and err.code == code
    assert KEY not in err.message and "Bearer" not in err.message
    if status == 429:
        assert err.retry_after == 7 and err.dashscope_code == "Throttling.RateQuota"


async def test_upstream_messages_are_cleaned_and_retry_after_ms_is_read() -> None:
    long = "line one\n\n\tline two " + "x" * 1000
    batch = Batch(V4, Params(64, True), openai_items(["a"], V4, 10))
    with pytest.raises(UpstreamRejected) as info:
        await dashscope(fail(400, {"code": "InvalidParameter", "message": long})).embed(batch)
    assert "line one line two" in info.value.message and len(info.value.message) < 350
    with pytest.raises(RateLimited) as limited:
        await dashscope(fail(429, {"error": {"code": "x"}}, {"retry-after-ms": "1500"})).embed(batch)
    assert limited.value.retry_after == 1.5


async def test_openai_request_has_no_nulls_and_base64_answers_are_decoded() -> None:
    bodies: list[dict[str, Any]] = []
    headers: list[httpx.Headers] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(orjson.loads(req.content))
        headers.append(req.headers)
        rows = [
            {"index": 1, "embedding": base64.b64encode(np.full(8, 1, "<f4").tobytes()).decode()},
            {"index": 0, "embedding": vec(0, 8)},
        ]
        return httpx.Response(200, json={"data": rows, "usage": {"prompt_tokens": 3, "total_tokens": 3}})

    items = openai_items(["a", [1, 2]], SMALL, 10)
    result = await openai(handler).embed(Batch(SMALL, Params(8, True), items))
    np.testing.assert_array_equal(result.vectors[:, 0], [0, 1])
    assert result.billed_tokens == 3
    assert bodies[0] == {
        "model": "text-embedding-3-small",
        "input": ["a", [1, 2]],
        "encoding_format": "float",
        "dimensions": 8,
    }
    await openai(handler, key=None).embed(Batch(SMALL, Params(8, False), items))
    assert bodies[1] == {"model": "text-embedding-3-small", "input": ["a", [1, 2]], "encoding_format": "float"}
    assert headers[0]["authorization"] == f"Bearer {KEY}" and "authorization" not in headers[1]


async def test_openai_upstream_set_to_base64_asks_for_it_and_checks_what_it_decodes() -> None:
    bodies: list[dict[str, Any]] = []
    answers: list[Any] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(orjson.loads(req.content))
        rows = [{"index": i, "embedding": v} for i, v in enumerate(answers.pop(0))]
        return httpx.Response(200, json={"data": rows, "usage": {"total_tokens": 2}})

    upstream = OpenAIUpstream("openai", MockPoster(handler), "http://up/v1", KEY, "base64")
    batch = Batch(SMALL, Params(8, True), openai_items(["a", "b"], SMALL, 10))
    want = np.arange(16, dtype="<f4").reshape(2, 8) / 7
    answers.append([base64.b64encode(row.tobytes()).decode() for row in want])
    result = await upstream.embed(batch)
    assert bodies[0]["encoding_format"] == "base64"
    np.testing.assert_array_equal(result.vectors, want)  # the float32 bytes as sent, no rounding
    answers.append([[float(x) for x in row] for row in want])  # a server that answers floats all the same
    np.testing.assert_array_equal((await upstream.embed(batch)).vectors, want)
    bad = [
        [base64.b64encode(want[0].tobytes()).decode(), "not base64!"],
        [base64.b64encode(want[0].tobytes()).decode(), base64.b64encode(want[1, :4].tobytes()).decode()],
        [base64.b64encode(want[0].tobytes()).decode(), "é" * 12],
        [base64.b64encode(want[0].tobytes()).decode(), base64.b64encode(np.full(8, np.inf, "<f4").tobytes()).decode()],
    ]
    for rows in bad:
        answers.append(rows)
        with pytest.raises(UpstreamInvalid):
            await upstream.embed(batch)


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        ({"input_tokens": 10, "input_tokens_details": {"image_tokens": 896}, "total_tokens": 906}, 906),
        ({"input_tokens": 5, "image_tokens": 896, "total_tokens": 901}, 901),
        ({"input_tokens": 5, "image_tokens": 896, "image_count": 1, "duration": 0}, 901),
        ({"total_tokens": 27}, 27),
        ({"prompt_tokens": 8, "total_tokens": 8}, 8),
        ({"total_tokens": -1, "prompt_tokens": 4}, 4),
        (None, 0),
        ("many", 0),
    ],
)
def test_usage_shapes(usage: object, tokens: int) -> None:
    assert usage_tokens(usage) == tokens
