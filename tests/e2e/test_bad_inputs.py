"""Bad input costs nothing: each row gets its 4xx in the caller's wire format, naming the field, and the
upstream receives nothing."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest

from tests.support.processes import UPSTREAM_KEY, Gateway, GatewayFactory, StandIn
from tests.support.samples import data_uri, jpeg, png

OPENAI = "/v1/embeddings"
MM = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"
TEXT = "/api/v1/services/embeddings/text-embedding/text-embedding"
PLUS = "tongyi-embedding-vision-plus"
V4 = "text-embedding-v4"
URL = "https://example.com/a.png"
PNG = data_uri(png([1, 2, 3]))
LIAR = data_uri(jpeg(9), "image/png")
BAD_B64 = "data:image/png;base64,iVBORw0KGgo!!!"
VIDEO_URI = "data:video/mp4;base64," + base64.b64encode(b"\x00\x00\x00\x20ftypisom").decode()
HUGE = data_uri(png([1]) + b"\x00" * (3 * 1024 * 1024))  # a PNG padded past the 3 MB limit of PLUS


def oa(**body: Any) -> dict[str, Any]:
    return {"model": V4, "input": ["ok"], **body}


def mm(contents: Any = None, **extra: Any) -> dict[str, Any]:
    return {"model": PLUS, "input": {"contents": ["ok"] if contents is None else contents}, **extra}


def tx(texts: Any = None, **extra: Any) -> dict[str, Any]:
    return {"model": V4, "input": {"texts": ["ok"] if texts is None else texts}, **extra}


# (route, body, status, param)
ROWS: list[tuple[str, Any, int, str]] = [
    # OpenAI wire
    (OPENAI, oa(input=[]), 400, "input"),
    (OPENAI, oa(input=""), 400, "input"),
    (OPENAI, oa(input=["a", ""]), 400, "input[1]"),
    (OPENAI, oa(input=["a", "   "]), 400, "input[1]"),
    (OPENAI, {"input": ["a"]}, 400, "model"),
    (OPENAI, {"model": V4}, 400, "input"),
    (OPENAI, oa(model=5), 400, "model"),
    (OPENAI, oa(model=""), 400, "model"),
    (OPENAI, oa(input=5), 400, "input"),
    (OPENAI, oa(input=None), 400, "input"),
    (OPENAI, oa(input=["a", 1.5]), 400, "input[1]"),
    (OPENAI, oa(input=["a", True]), 400, "input[1]"),
    (OPENAI, oa(input=[1, 2, 100256]), 400, "input"),  # token ids decoded for a DashScope model: no such token
    (OPENAI, oa(input=[{"text": ["a"]}]), 400, "input[0].text"),
    (OPENAI, oa(dimensions="512"), 400, "dimensions"),
    (OPENAI, oa(dimensions=0), 400, "dimensions"),
    (OPENAI, oa(dimensions=100), 400, "dimensions"),
    (OPENAI, oa(encoding_format="hex"), 400, "encoding_format"),
    (OPENAI, oa(user=5), 400, "user"),
    (OPENAI, oa(text_type="passage"), 400, "text_type"),
    (OPENAI, oa(fps="fast", model=PLUS), 400, "fps"),
    (OPENAI, oa(fps=0.5), 400, "fps"),  # a multimodal option on a text model
    (OPENAI, oa(enable_fusion=True, model=PLUS), 400, "enable_fusion"),
    (OPENAI, oa(enable_fusion=True, model="qwen3-vl-embedding", input=["a"] * 21), 400, "input"),
    (OPENAI, oa(text_type="query", model="text-embedding-3-small"), 400, "text_type"),
    (OPENAI, oa(model="no-such-model"), 404, "model"),
    (OPENAI, oa(input=["a"] * 2049), 400, "input"),
    (OPENAI, oa(model=PLUS, input=["a", {"image": BAD_B64}]), 400, "input[1].image"),
    (OPENAI, oa(model=PLUS, input=["a", "b", "c", {"image": LIAR}]), 400, "input[3].image"),
    (OPENAI, oa(model=PLUS, input=[{"image": HUGE}]), 413, "input[0].image"),
    (OPENAI, oa(model=PLUS, input=[{"image": "file:///etc/passwd"}]), 400, "input[0].image"),
    (OPENAI, oa(model=PLUS, input=[{"video": VIDEO_URI}]), 400, "input[0].video"),
    (OPENAI, oa(model=PLUS, input=[{"multi_images": [PNG] * 9}]), 400, "input[0].multi_images"),
    (OPENAI, oa(model=PLUS, input=[{"text": "a", "image": URL}]), 400, "input[0]"),  # no fused items on PLUS
    (OPENAI, oa(model=PLUS, input=[{"audio": URL}]), 400, "input[0].audio"),
    (OPENAI, oa(input=[{"image": URL}]), 400, "input[0].image"),  # a text model
    (OPENAI, oa(model=PLUS, input=["x" * 4097]), 400, "input[0]"),
    (OPENAI, oa(parameters={"dimension": 64}), 400, "parameters"),  # unknown field on the OpenAI route
    (OPENAI, oa(auto_truncation=True), 400, "auto_truncation"),
    (OPENAI, b"{not json", 400, "body"),
    (OPENAI, b"\xff\xfe{}", 400, "body"),
    (OPENAI, b"", 400, "body"),
    (OPENAI, [oa()], 400, "body"),
    (OPENAI, "just a string", 400, "body"),
    # DashScope wire, multimodal route
    (MM, mm([]), 400, "input.contents"),
    (MM, mm("a"), 400, "input.contents"),
    (MM, mm([""]), 400, "input.contents[0]"),
    (MM, mm([{"text": ""}]), 400, "input.contents[0].text"),
    (MM, mm(["a", {"text": 5}]), 400, "input.contents[1].text"),
    (MM, mm(["a", 5]), 400, "input.contents[1]"),
    (MM, {"model": PLUS}, 400, "input"),
    (MM, {"model": PLUS, "input": {"contents": ["a"], "texts": ["a"]}}, 400, "input.texts"),
    (MM, mm(parameters="x"), 400, "parameters"),
    (MM, mm(parameters={"dimension": "512"}), 400, "parameters.dimension"),
    (MM, mm(parameters={"dimension": 100}), 400, "parameters.dimension"),
    (MM, mm(parameters={"fps": 2}), 400, "parameters.fps"),
    (MM, mm(parameters={"text_type": "query"}), 400, "parameters.text_type"),
    (MM, mm(["a"] * 21, model="qwen3-vl-embedding", parameters={"enable_fusion": True}), 400, "input.contents"),
    (MM, mm(model="no-such-model"), 404, "model"),
    (MM, mm(model=V4), 400, "model"),  # a text model on the multimodal route
    (MM, mm(["a"] * 2049), 400, "input.contents"),
    (MM, mm(["a", {"image": BAD_B64}]), 400, "input.contents[1].image"),
    (MM, mm(["a", "b", "c", {"image": LIAR}]), 400, "input.contents[3].image"),
    (MM, mm([{"image": HUGE}]), 413, "input.contents[0].image"),
    (MM, mm([{"video": VIDEO_URI}]), 400, "input.contents[0].video"),
    (MM, mm([{"multi_images": [URL] * 9}]), 400, "input.contents[0].multi_images"),
    (MM, mm([{"multi_images": [URL, LIAR]}]), 400, "input.contents[0].multi_images[1]"),
    (MM, mm(["x" * 4097]), 400, "input.contents[0]"),
    (MM, b"{not json", 400, "body"),
    (MM, [1, 2], 400, "body"),
    # DashScope wire, text route
    (TEXT, tx([]), 400, "input.texts"),
    (TEXT, tx([""]), 400, "input.texts[0]"),
    (TEXT, tx(["a", 1]), 400, "input.texts[1]"),
    (TEXT, tx(["a", {"text": "b"}]), 400, "input.texts[1]"),
    (TEXT, tx(5), 400, "input.texts"),
    (TEXT, {"model": V4, "input": ["a"]}, 400, "input"),
    (TEXT, tx(parameters={"dimension": 100}), 400, "parameters.dimension"),
    (TEXT, tx(parameters={"text_type": "passage"}), 400, "parameters.text_type"),
    (TEXT, tx(parameters={"output_type": "sparse"}), 400, "parameters.output_type"),
    (TEXT, tx(model="no-such-model"), 404, "model"),
    (TEXT, tx(["a"] * 2049), 400, "input.texts"),
    (TEXT, tx(["x" * 32769]), 400, "input.texts[0]"),
    (TEXT, b"null", 400, "body"),
]


def post(gw: Gateway, route: str, body: Any, content_type: str = "application/json") -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return gw.post(route, content=raw, headers={"Content-Type": content_type}, timeout=30)


def assert_error(resp: httpx.Response, route: str, status: int, param: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert len(resp.headers.get_list("x-request-id")) == 1
    body = resp.json()
    if route == OPENAI:
        assert set(body) == {"error"}
        err = body["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["param"] == param
        assert err["type"] == "invalid_request_error"
        message = err["message"]
    else:
        assert {"code", "message", "request_id"} <= set(body) <= {"code", "message", "request_id", "param"}
        codes = {400: "InvalidParameter", 404: "ModelNotFound", 413: "BadRequest.TooLarge"}
        assert body["code"] == codes[status]
        assert body["request_id"] == resp.headers["x-request-id"]
        message = body["message"]
    assert param in message
    assert "Traceback" not in message and UPSTREAM_KEY not in resp.text


@pytest.mark.parametrize(("route", "body", "status", "param"), ROWS)
def test_bad_input(gateway_redis: Gateway, standin: StandIn, route: str, body: Any, status: int, param: str) -> None:
    assert_error(post(gateway_redis, route, body), route, status, param)
    assert standin.calls() == []


@pytest.fixture(scope="module")
def small_body_gateway(gateways: GatewayFactory) -> Gateway:
    return gateways.start(env={"MAX_BODY_BYTES": "2048"})


@pytest.mark.parametrize(
    ("route", "make"), [(OPENAI, lambda t: oa(input=[t])), (MM, lambda t: mm([t])), (TEXT, lambda t: tx([t]))]
)
def test_body_over_the_cap_is_413(small_body_gateway: Gateway, standin: StandIn, route: str, make: Any) -> None:
    body = make("x" * 3000)
    assert_error(post(small_body_gateway, route, body), route, 413, "body")

    def chunks() -> Any:  # no Content-Length: the cap holds while streaming
        raw = orjson.dumps(body)
        for i in range(0, len(raw), 500):
            yield raw[i : i + 500]

    streamed = small_body_gateway.post(route, content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(streamed, route, 413, "body")
    assert standin.calls() == []
    assert post(small_body_gateway, route, make("x" * 1000)).status_code == 200  # under the cap


@pytest.mark.parametrize(
    ("route", "body"), [(OPENAI, oa(input=["form encoded"])), (MM, mm(["form encoded"])), (TEXT, tx(["form encoded"]))]
)
def test_form_encoded_content_type_with_a_json_body_works(gateway_redis: Gateway, route: str, body: Any) -> None:
    resp = post(gateway_redis, route, body, "application/x-www-form-urlencoded")  # what curl -d sends
    assert resp.status_code == 200, resp.text
    resp = post(gateway_redis, route, body, "text/plain")
    assert resp.status_code == 200, resp.text


def test_no_traceback_or_key_in_the_gateway_log(gateway_redis: Gateway) -> None:
    log = gateway_redis.output()
    assert "Traceback" not in log and UPSTREAM_KEY not in log
    assert '"status":500' not in log
