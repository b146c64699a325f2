"""The stand-in upstream (bench/standin.py), run as a real process and called over HTTP."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.standin import canonical_digest, expected_vector

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-key"
MM = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"
TEXT = "/api/v1/services/embeddings/text-embedding/text-embedding"
PLUS = "tongyi-embedding-vision-plus"
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "bench.standin", "--host", "127.0.0.1", "--port", str(port), "--api-key", KEY]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, "stand-in exited early"
            try:
                if httpx.get(url + "/_control", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "stand-in did not start"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture()
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as c:
        assert c.post("/_reset?control=1").status_code == 200
        yield c


def _vec(v: object) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


def test_multimodal_happy_path_shuffled_indices(client: httpx.Client) -> None:
    model = "tongyi-embedding-vision-plus"
    contents = [
        "a red road bike",
        {"image": "https://example.com/bike.jpg"},
        {"image": PNG},
        {"video": "https://example.com/clip.mp4"},
        {"multi_images": ["https://example.com/a.jpg", PNG]},
    ]
    r = client.post(
        MM,
        json={
            "model": model,
            "input": {"contents": contents},
            "parameters": {"dimension": 256, "fps": 0.5, "output_type": "dense"},
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    uuid.UUID(body["request_id"])
    assert r.headers["x-request-id"] == body["request_id"]
    embs = body["output"]["embeddings"]
    assert [e["index"] for e in embs] == [4, 3, 2, 1, 0]  # deterministically shuffled
    by_index = {e["index"]: e for e in embs}
    types = ["text", "image", "image", "video", "multi_images"]
    for i, content in enumerate(contents):
        got = _vec(by_index[i]["embedding"])
        assert by_index[i]["type"] == types[i]
        assert np.array_equal(got, expected_vector(model, 256, content, {"fps": 0.5}))
        assert abs(float(np.linalg.norm(got)) - 1) < 1e-5
    # output_type "dense" is the default, so it does not change vectors; other params do
    assert not np.array_equal(
        expected_vector(model, 256, "x", {"fps": 0.5}), expected_vector(model, 256, "x", {"output_type": "dense"})
    )
    usage = body["usage"]
    assert usage["input_tokens_details"] == {"image_tokens": 896 * 4 + 2000, "text_tokens": 3}
    assert usage["total_tokens"] == 3 + 896 * 4 + 2000


def test_default_dimension_and_usage_shapes(client: httpx.Client) -> None:
    r = client.post(MM, json={"model": "qwen3-vl-embedding", "input": {"contents": ["hello world!"]}})
    body = r.json()
    assert len(body["output"]["embeddings"][0]["embedding"]) == 2560
    assert body["usage"] == {"input_tokens": 3, "image_tokens": 0, "total_tokens": 3}
    r = client.post(
        MM,
        json={
            "model": "multimodal-embedding-v1",
            "parameters": {},
            "input": {"contents": [{"image": "https://e.com/a.png"}, {"video": "https://e/v"}]},
        },
    )
    assert r.json()["usage"] == {"input_tokens": 0, "image_tokens": 896, "image_count": 1, "duration": 10}


def test_text_route_uses_text_index(client: httpx.Client) -> None:
    model = "text-embedding-v4"
    r = client.post(
        TEXT,
        json={
            "model": model,
            "input": {"texts": ["first text", "second"]},
            "parameters": {"dimension": 512, "text_type": "query"},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    embs = body["output"]["embeddings"]
    assert all("text_index" in e and "index" not in e for e in embs)
    for e in embs:
        text = ["first text", "second"][e["text_index"]]
        assert np.array_equal(_vec(e["embedding"]), expected_vector(model, 512, text, {"text_type": "query"}))
    assert body["usage"] == {"total_tokens": 2 + 1}
    # text_type "document" is the default: same vector as no text_type
    params = {"text_type": "document"}
    r = client.post(TEXT, json={"model": model, "input": {"texts": "one"}, "parameters": params})
    assert np.array_equal(
        _vec(r.json()["output"]["embeddings"][0]["embedding"]), expected_vector(model, 1024, {"text": "one"})
    )


def test_openai_float_and_base64(client: httpx.Client) -> None:
    model = "text-embedding-3-small"
    r = client.post("/v1/embeddings", json={"model": model, "input": ["x", "yy"], "dimensions": 64})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == model
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    for d in body["data"]:
        assert d["object"] == "embedding"
        assert np.array_equal(_vec(d["embedding"]), expected_vector(model, 64, ["x", "yy"][d["index"]]))
    tokens = [[1, 2, 3], [4, 5]]
    r = client.post("/v1/embeddings", json={"model": model, "input": tokens, "encoding_format": "base64"})
    for d in r.json()["data"]:
        got = np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
        assert np.array_equal(got, expected_vector(model, 1536, {"tokens": tokens[d["index"]]}))
    r = client.post("/compatible-mode/v1/embeddings", json={"model": "text-embedding-v4", "input": "hi"})
    want = expected_vector("text-embedding-v4", 1024, "hi")
    assert np.array_equal(_vec(r.json()["data"][0]["embedding"]), want)
    r = client.post("/compatible-mode/v1/embeddings", json={"model": "qwen3-vl-embedding", "input": "hi"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_supported"


def test_auth(client: httpx.Client) -> None:
    payload = {"model": "text-embedding-v3", "input": {"texts": ["a"]}}
    r = client.post(TEXT, json=payload, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert r.json()["code"] == "InvalidApiKey" and r.json()["message"] == "Invalid API-key provided."
    r = client.post("/v1/embeddings", json={"model": "bge-small", "input": "a"}, headers={"Authorization": ""})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = client.post(TEXT, json=payload, headers={"Authorization": "", "X-DashScope-ApiKey": KEY})
    assert r.status_code == 200
    r = client.post(TEXT, json=payload, headers={"X-DashScope-Async": "enable"})
    assert r.status_code == 403 and r.json()["code"] == "AccessDenied"


@pytest.mark.parametrize(
    ("path", "payload", "status", "needle"),
    [
        (
            MM,
            {"model": PLUS, "input": {"contents": ["t"] * 21}},
            400,
            "batch size is invalid, it should not be larger than 20",
        ),
        (TEXT, {"model": "text-embedding-v4", "input": {"texts": ["t"] * 11}}, 400, "not be larger than 10"),
        (MM, {"model": PLUS, "input": {"contents": ["t"]}, "parameters": {"dimension": 768}}, 400, "dimension"),
        ("/v1/embeddings", {"model": "bge-small", "input": "t", "dimensions": 128}, 400, "dimensions"),
        (MM, {"model": "no-such-model", "input": {"contents": ["t"]}}, 404, "ModelNotFound"),
        ("/v1/embeddings", {"model": "no-such-model", "input": "t"}, 404, "model_not_found"),
        (MM, {"model": PLUS, "input": {"contents": []}}, 400, "InvalidParameter"),
        (MM, {"model": PLUS, "input": {"contents": [{"video": PNG}]}}, 400, "video"),
        (MM, {"model": PLUS, "input": {"contents": [{"image": "data:image/png;base64,@@"}]}}, 400, "base64"),
        (MM, {"model": PLUS, "input": {"contents": [{"text": "a", "image": PNG}]}}, 400, "several"),
        (MM, {"model": PLUS, "input": {"contents": [{"multi_images": [PNG] * 9}]}}, 400, "multi_images"),
        (MM, {"model": PLUS, "input": {"contents": [{"image": "oss://b/k.png"}]}}, 400, "OssResourceResolve"),
        (TEXT, {"model": "text-embedding-v4", "input": {"texts": [{"image": PNG}]}}, 400, "InvalidParameter"),
        (TEXT, {"model": "text-embedding-v4", "input": {"texts": ["a"]}, "parameters": 5}, 400, "parameters"),
        (TEXT, {"model": "text-embedding-v4"}, 400, "input"),
        (TEXT, [1, 2], 400, "object"),
        ("/v1/embeddings", {"model": "bge-small", "input": []}, 400, "input"),
        ("/v1/embeddings", {"model": "bge-small", "input": ["a", 3]}, 400, "input"),
        ("/v1/embeddings", {"model": "bge-small", "input": "a", "encoding_format": "hex"}, 400, "encoding"),
    ],
)
def test_contract_errors(client: httpx.Client, path: str, payload: object, status: int, needle: str) -> None:
    r = client.post(path, json=payload)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert needle in r.text
    body = r.json()
    if path.startswith("/api/"):
        assert set(body) == {"code", "message", "request_id"}
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}


def test_malformed_json(client: httpx.Client) -> None:
    r = client.post(MM, content=b'{"model": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter"


def test_fail_429_with_retry_after(client: httpx.Client) -> None:
    ok = client.post("/_control", json={"fail_rate": 1, "fail_modes": ["429"], "retry_after": 2})
    assert ok.json()["fail_rate"] == 1
    assert client.get("/_control").json()["retry_after"] == 2
    r = client.post(TEXT, json={"model": "text-embedding-v4", "input": {"texts": ["a"]}})
    assert r.status_code == 429
    assert r.json()["code"].startswith("Throttling")
    assert r.headers["retry-after"] == "2"
    r = client.post("/v1/embeddings", json={"model": "bge-small", "input": "a"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    calls = client.get("/_stats").json()["calls"]
    assert [c["failed"] for c in calls] == [True, True]
    assert client.post("/_control", json={"fail_modes": ["bogus"]}).status_code == 400


def test_down_gives_503(client: httpx.Client) -> None:
    client.post("/_control", json={"down": True})
    r = client.post(TEXT, json={"model": "text-embedding-v4", "input": {"texts": ["a"]}})
    assert r.status_code == 503 and r.json()["code"] == "ModelUnavailable"


def test_reset_mode_drops_connection(client: httpx.Client) -> None:
    client.post("/_control", json={"fail_rate": 1, "fail_modes": ["reset"]})
    with pytest.raises(httpx.TransportError):
        client.post(TEXT, json={"model": "text-embedding-v4", "input": {"texts": ["a"]}})
    client.post("/_control", json={"fail_rate": 0})
    r = client.post(TEXT, json={"model": "text-embedding-v4", "input": {"texts": ["a"]}})
    assert r.status_code == 200
    assert [c["failed"] for c in client.get("/_stats").json()["calls"]] == [True, False]


def test_latency(client: httpx.Client) -> None:
    client.post("/_control", json={"latency_ms": 200})
    t0 = time.perf_counter()
    r = client.post(TEXT, json={"model": "text-embedding-v4", "input": {"texts": ["a"]}})
    assert r.status_code == 200
    assert time.perf_counter() - t0 >= 0.2
    t0 = time.perf_counter()
    client.get("/_stats")
    assert time.perf_counter() - t0 < 0.2  # control routes are not delayed


def test_chars_per_token_sets_the_bill_of_texts(client: httpx.Client) -> None:
    """A text is billed len // 4 tokens, or len // chars_per_token: 2 bills over the gateway's len // 3 estimate
    (as a real tokenizer bills CJK text); the reset puts it back."""
    texts = {"texts": ["x" * 12, "y" * 30]}
    r = client.post(TEXT, json={"model": "text-embedding-v4", "input": texts})
    assert r.json()["usage"] == {"total_tokens": 3 + 7}
    assert client.post("/_control", json={"chars_per_token": 2}).json()["chars_per_token"] == 2
    r = client.post(TEXT, json={"model": "text-embedding-v4", "input": texts})
    assert r.json()["usage"] == {"total_tokens": 6 + 15}
    r = client.post("/v1/embeddings", json={"model": "bge-small", "input": "z" * 9})
    assert r.json()["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert client.post("/_control", json={"chars_per_token": 0}).status_code == 400
    client.post("/_reset?control=1")
    r = client.post(TEXT, json={"model": "text-embedding-v4", "input": texts})
    assert r.json()["usage"] == {"total_tokens": 3 + 7}


def test_stats_digests(client: httpx.Client) -> None:
    model = "tongyi-embedding-vision-flash"
    contents = ["a", {"image": "https://e.com/x.png"}]
    params = {"instruct": "find"}
    client.post(MM, json={"model": model, "input": {"contents": contents}, "parameters": params})
    client.post("/v1/embeddings", json={"model": "bge-small", "input": [5, 6, 7]})
    stats = client.get("/_stats").json()
    assert stats["items_total"] == 3
    c0, c1 = stats["calls"]
    assert c0["route"] == MM and c0["model"] == model and c0["n_items"] == 2 and c0["failed"] is False
    assert c0["digests"] == [canonical_digest(model, 768, c, {"instruct": "find"}) for c in contents]
    assert isinstance(c0["t"], float) and abs(c0["t"] - time.time()) < 60
    assert c1["digests"] == [canonical_digest("bge-small", 384, {"tokens": [5, 6, 7]}, {})]
    client.post("/_reset")
    empty = {"calls": [], "items_total": 0, "calls_total": 0, "calls_failed": 0}
    assert client.get("/_stats").json() == empty


def test_fusion(client: httpx.Client) -> None:
    model = "qwen3-vl-embedding"
    contents = ["a dog", {"image": PNG}, {"video": "https://e.com/v.mp4"}]
    r = client.post(
        MM,
        json={"model": model, "input": {"contents": contents}, "parameters": {"enable_fusion": True, "dimension": 256}},
    )
    embs = r.json()["output"]["embeddings"]
    assert len(embs) == 1 and embs[0]["index"] == 0 and embs[0]["type"] == "fused"
    want = expected_vector(model, 256, {"fused": [{"text": "a dog"}, {"image": PNG}, contents[2]]})
    assert np.array_equal(_vec(embs[0]["embedding"]), want)
    r = client.post(MM, json={"model": PLUS, "input": {"contents": ["a"]}, "parameters": {"enable_fusion": True}})
    assert r.status_code == 400
    dated = "tongyi-embedding-vision-plus-2026-03-06"
    item = {"text": "a", "image": PNG, "factor": 0.5}
    r = client.post(MM, json={"model": dated, "input": {"contents": [item, "b"]}})
    embs = sorted(r.json()["output"]["embeddings"], key=lambda e: e["index"])
    assert [e["type"] for e in embs] == ["fused", "text"]
    assert np.array_equal(_vec(embs[0]["embedding"]), expected_vector(dated, 1152, item))
