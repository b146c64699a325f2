"""A corpus of hostile request bodies, for both wire formats: each one gets a 4xx in the caller's wire
format, the gateway stays up, and the stand-in upstream receives nothing."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable

import httpx
import pytest

from bench.imageserver import JPEG_BYTES, png_bytes
from tests.support.polling import eventually
from tests.support.processes import Gateway, StandIn

OPENAI = "/v1/embeddings"
MM = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"
TEXT = "/api/v1/services/embeddings/text-embedding/text-embedding"
MM_MODEL = "tongyi-embedding-vision-plus"
TEXT_MODEL = "text-embedding-v4"
PNG = png_bytes(2, 2)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def nest(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def oa(input_json: str, extra: str = "", model: str = f'"{TEXT_MODEL}"') -> bytes:
    return f'{{"model": {model}, "input": {input_json}{extra}}}'.encode()


def mm(contents_json: str, params: str = "{}", model: str = f'"{MM_MODEL}"') -> bytes:
    return f'{{"model": {model}, "input": {{"contents": {contents_json}}}, "parameters": {params}}}'.encode()


def tx(texts_json: str, params: str = "{}", model: str = f'"{TEXT_MODEL}"') -> bytes:
    return f'{{"model": {model}, "input": {{"texts": {texts_json}}}, "parameters": {params}}}'.encode()


def image(uri: str) -> str:
    return f'[{{"image": "{uri}"}}]'


HUGE = "x" * (10 * 1024 * 1024)
MANY = "[" + ",".join(['"a"'] * 100_000) + "]"
LYING = [
    f"data:image/png;base64,{b64(JPEG_BYTES)}",  # declared png, bytes jpeg
    f"data:image/jpeg;base64,{b64(b'GIF89a' + bytes(40))}",  # gif is not accepted by this model
    f"data:image/png;base64,{b64(b'<svg xmlns=1>' * 10)}",  # not an image format at all
    f"data:image/png;base64,{b64(PNG)[:-3]}",  # truncated base64
    "data:image/png;base64,@@@@",
    "data:text/html;base64," + b64(b"<script>"),
    "data:image/png," + "A" * 20,  # not base64-marked
    "data:image/png;base64,",
]
BOMB = "data:image/png;base64," + "A" * (5 * 1024 * 1024)  # decodes to 3.75 MB of zeros > 3 MB
NOT_UTF8 = b'{"model": "' + TEXT_MODEL.encode() + b'", "input": "\xff\xfe\xc3\x28"}'

# (name, route, body): every one of them must get a 4xx.
CORPUS: list[tuple[str, str, bytes]] = [
    ("empty", OPENAI, b""),
    ("null", OPENAI, b"null"),
    ("array", MM, b"[1, 2]"),
    ("string", TEXT, b'"hello"'),
    ("truncated", OPENAI, b'{"model": "x", "input": ['),
    ("deep-nesting-body", OPENAI, nest(100_000).encode()),
    ("deep-nesting-input", OPENAI, oa(nest(900))),
    ("deep-nesting-params", MM, mm('["a"]', '{"custom": ' + nest(900) + "}")),
    ("deep-nesting-contents", MM, mm(nest(900, '{"text": "a"}'))),
    ("huge-int-dimension", OPENAI, oa('"a"', ', "dimensions": 1' + "0" * 400)),
    ("huge-float-dimension", TEXT, tx('["a"]', '{"dimension": 1e400}')),
    ("huge-token", OPENAI, oa("[99999999999999999999999]")),
    ("negative-token", OPENAI, oa("[[1, -5]]")),
    ("nan", OPENAI, oa('"a"', ', "fps": NaN', model=f'"{MM_MODEL}"')),
    ("infinity", MM, mm('["a"]', '{"fps": Infinity}')),
    ("nan-string-params", MM, mm('["a"]', '{"fps": "NaN"}')),
    ("invalid-utf8", OPENAI, NOT_UTF8),
    ("invalid-utf8-dashscope", TEXT, NOT_UTF8.replace(b'"input": ', b'"input": {"texts": ').replace(b'"}', b'"}}')),
    ("lone-surrogate", OPENAI, oa('"\\ud800"')),
    ("lone-surrogate-dashscope", TEXT, tx('["a\\udfff"]')),
    ("lone-surrogate-model", MM, mm('["a"]', model='"\\ud83d"')),
    ("null-byte-model", OPENAI, oa('"a"', model='"text-embedding-v4\\u0000"')),
    ("null-byte-url", MM, mm(image("https://example.com/a.png\\u0000.jpg"))),
    ("control-char-url", OPENAI, oa(image("https://example.com/a\\u0007.png"), model=f'"{MM_MODEL}"')),
    ("10mb-text", OPENAI, oa(f'"{HUGE}"')),
    ("10mb-text-dashscope", TEXT, tx(f'["{HUGE}"]')),
    ("10mb-model-name", MM, mm('["a"]', model=f'"{HUGE}"')),
    ("100k-items", OPENAI, oa(MANY)),
    ("100k-items-dashscope", TEXT, tx(MANY)),
    ("100k-contents", MM, mm(MANY)),
    ("100k-token-list", OPENAI, oa("[" + ",".join(["7"] * 100_000) + "]", model='"text-embedding-3-small"')),
    ("100k-tokens-in-one-item", OPENAI, oa("[[" + ",".join(["7"] * 100_000) + "]]", model='"text-embedding-3-small"')),
    ("empty-input", OPENAI, oa("[]")),
    ("empty-string", OPENAI, oa('""')),
    ("blank-texts", TEXT, tx('["   "]')),
    ("base64-bomb", MM, mm(image(BOMB))),
    ("base64-bomb-openai", OPENAI, oa(image(BOMB), model=f'"{MM_MODEL}"')),
    ("body-over-cap", OPENAI, oa('"' + "y" * (33 * 1024 * 1024) + '"')),
    ("unknown-field", OPENAI, oa('"a"', ', "temperature": 1')),
    ("unknown-item-key", MM, mm('[{"txt": "a"}]')),
    ("fused-on-undated", MM, mm(f'[{{"text": "a", "image": "data:image/png;base64,{b64(PNG)}"}}]')),
    ("video-data-uri", MM, mm('[{"video": "data:video/mp4;base64,AAAA"}]')),
    ("file-url", MM, mm(image("file:///etc/passwd"))),
    ("multi-images-too-many", MM, mm('[{"multi_images": [' + ",".join(['"https://e.com/a.png"'] * 9) + "]}]")),
    ("factor-negative", MM, mm('[{"image": "https://e.com/a.png", "factor": -1}]')),
    ("factor-bool", MM, mm('[{"image": "https://e.com/a.png", "factor": true}]')),
    ("dimension-bool", OPENAI, oa('"a"', ', "dimensions": true')),
    ("dimension-string", TEXT, tx('["a"]', '{"dimension": "1024"}')),
    ("dimension-float", MM, mm('["a"]', '{"dimension": 512.0}')),
    ("dimension-zero", OPENAI, oa('"a"', ', "dimensions": 0')),
    ("encoding-format", OPENAI, oa('"a"', ', "encoding_format": "hex"')),
    ("output-type-sparse", TEXT, tx('["a"]', '{"output_type": "sparse"}')),
    ("params-not-object", MM, mm('["a"]', "[]")),
    ("contents-object", MM, b'{"model": "' + MM_MODEL.encode() + b'", "input": {"contents": {"text": "a"}}}'),
    ("texts-number", TEXT, tx("42")),
    ("texts-mixed", TEXT, tx('["a", 5, null]')),
    ("input-number", OPENAI, oa("3.5")),
    ("input-object", OPENAI, oa('{"text": "a"}')),
    ("input-bools", OPENAI, oa("[true, false]")),
    ("input-nulls", OPENAI, oa("[null]")),
    ("model-number", OPENAI, oa('"a"', model="5")),
    ("model-list", TEXT, tx('["a"]', model='["text-embedding-v4"]')),
    ("model-missing", MM, b'{"input": {"contents": ["a"]}}'),
    ("input-missing", TEXT, b'{"model": "text-embedding-v4"}'),
    ("text-model-on-mm-route", MM, mm('["a"]', model=f'"{TEXT_MODEL}"')),
    ("image-on-text-model", OPENAI, oa(image(f"data:image/png;base64,{b64(PNG)}"))),
    ("dup-keys-bad-last", OPENAI, b'{"model": "text-embedding-v4", "input": "a", "input": 5}'),
    ("instruct-too-long", OPENAI, oa('"a"', ', "instruct": "' + "i" * 5000 + '"', model=f'"{MM_MODEL}"')),
    *[(f"lying-image-{i}", MM, mm(image(uri))) for i, uri in enumerate(LYING)],
    *[(f"lying-image-openai-{i}", OPENAI, oa(image(uri), model=f'"{MM_MODEL}"')) for i, uri in enumerate(LYING)],
]


def check_wire(route: str, r: httpx.Response) -> None:
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    if route == OPENAI:
        assert set(body) == {"error"}
        assert isinstance(body["error"]["message"], str) and body["error"]["type"]
    else:
        assert isinstance(body["code"], str) and isinstance(body["message"], str) and body["request_id"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize(("name", "route", "body"), CORPUS, ids=[c[0] for c in CORPUS])
def test_hostile_body_gets_a_4xx_in_the_callers_wire(
    name: str, route: str, body: bytes, gateway_redis: Gateway, standin: StandIn
) -> None:
    r = gateway_redis.post(route, content=body, headers={"content-type": "application/json"}, timeout=60)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    check_wire(route, r)
    assert len(r.content) < 4096  # the error never echoes the input back
    assert standin.calls() == []


HEADER_CASES: list[tuple[str, Callable[[], dict[str, str]]]] = [
    ("huge-header", lambda: {"x-padding": "p" * 200_000}),
    ("many-headers", lambda: {f"x-h{i}": "v" for i in range(500)}),
    ("huge-request-id", lambda: {"x-request-id": "r" * 100_000}),
]


@pytest.mark.parametrize(("name", "headers"), HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
@pytest.mark.parametrize("route", [OPENAI, TEXT])
def test_huge_headers_get_a_431_and_the_gateway_stays_up(
    name: str, headers: Callable[[], dict[str, str]], route: str, gateway_redis: Gateway, standin: StandIn
) -> None:
    body = oa('"hi"') if route == OPENAI else tx('["hi"]')
    r = httpx.post(gateway_redis.url + route, content=body, headers={**gateway_redis.headers, **headers()}, timeout=30)
    assert r.status_code == 431
    check_wire(route, r)
    assert len(r.headers["x-request-id"]) == 32  # the client's oversized id was not taken
    assert standin.calls() == []
    assert httpx.get(gateway_redis.url + "/healthz").status_code == 200


def test_a_content_length_that_lies_is_refused(gateway_redis: Gateway, standin: StandIn) -> None:
    """Declares a terabyte and sends a few bytes: refused from the declaration, at once."""
    host, port = gateway_redis.url.removeprefix("http://").split(":")
    head = f"POST {OPENAI} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{gateway_redis.header_lines}"
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall((head + f"Content-Length: {10**12}\r\n\r\n").encode() + oa('"a"'))
        answer = b""
        while not answer.endswith(b"}") and (chunk := s.recv(65536)):
            answer += chunk
    head_text, _, payload = answer.decode("latin-1").partition("\r\n\r\n")
    assert head_text.startswith("HTTP/1.1 413 ")
    assert head_text.lower().count("x-request-id:") == 1
    assert "error" in json.loads(payload)
    assert standin.calls() == []


def test_a_streamed_body_past_the_cap_is_cut(gateway_redis: Gateway, standin: StandIn) -> None:
    def chunks() -> object:
        yield b'{"model": "text-embedding-v4", "input": "'
        for _ in range(40):
            yield b"z" * (1024 * 1024)

    r = httpx.post(gateway_redis.url + TEXT, content=chunks(), headers=gateway_redis.headers, timeout=60)  # type: ignore[arg-type]
    assert r.status_code == 413
    check_wire(TEXT, r)
    assert standin.calls() == []


def test_a_client_leaving_mid_body_is_a_499_not_a_fault(gateway_redis: Gateway, standin: StandIn) -> None:
    """Half a body, then the connection closes: logged and counted as 499 (a 4xx), never as an unhandled
    error or a 5xx, and nothing goes upstream."""
    host, port = gateway_redis.url.removeprefix("http://").split(":")
    rid = "client-leaves-mid-body-1"
    head = (
        f"POST {OPENAI} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{gateway_redis.header_lines}"
        f"x-request-id: {rid}\r\nContent-Length: 5000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.encode() + b'{"model": "text-embedding-v4", "input": "abc')
    eventually(lambda: rid in gateway_redis.output(), what="the access log line of the request left mid-body")
    lines = [json.loads(x) for x in gateway_redis.output().splitlines() if rid in x and x.startswith("{")]
    assert [line["status"] for line in lines] == [499]
    assert "unhandled" not in gateway_redis.output()
    assert standin.calls() == []
