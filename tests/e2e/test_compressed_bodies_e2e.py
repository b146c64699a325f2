"""Issue 23, item 4 on the wire (the gateway as a process, auth on, the stand-in): gzip and deflate bodies of
each wire format get the stand-in's exact vectors; `br` is 415 naming it; a 1 GB gzip bomb is 413 at the
body cap while the gateway's resident memory stays bounded; a key header sent twice is 400. Every refusal
is in the caller's wire format and comes before any upstream call."""

from __future__ import annotations

import gzip
import json
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.standin import expected_vector
from tests.support.processes import Gateway, GatewayFactory, StandIn
from tests.support.teamkit import DS_MM, DS_TEXT, OPENAI, write_config

DIM = 64
MB = 1 << 20
CAP = 32 * MB  # MAX_BODY_BYTES, the default


@pytest.fixture(scope="module")
def api(gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> tuple[Gateway, str]:
    config = tmp_path_factory.mktemp("gzip") / "gateway.yaml"
    keys = write_config(config, {"team": {}})
    gateways.secrets.update(keys.values())
    return gateways.start(config=str(config)), keys["team"]


def body_of(route: str, text: str) -> tuple[dict[str, Any], np.ndarray]:
    if route == OPENAI:
        return {"model": "text-embedding-v4", "input": [text], "dimensions": DIM, "encoding_format": "float"}, (
            expected_vector("text-embedding-v4", DIM, text)
        )
    if route == DS_TEXT:
        body = {"model": "text-embedding-v4", "input": {"texts": [text]}, "parameters": {"dimension": DIM}}
        return body, expected_vector("text-embedding-v4", DIM, text)
    body = {
        "model": "tongyi-embedding-vision-plus",
        "input": {"contents": [{"text": text}]},
        "parameters": {"dimension": DIM},
    }
    return body, expected_vector("tongyi-embedding-vision-plus", DIM, {"text": text})


def vector_of(route: str, r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    rows = r.json()["data"] if route == OPENAI else r.json()["output"]["embeddings"]
    return np.asarray(rows[0]["embedding"], dtype=np.float32)


def error_of(route: str, r: httpx.Response) -> tuple[str, str | None]:
    body = r.json()
    if route == OPENAI:
        return body["error"]["message"], body["error"]["param"]
    assert body["request_id"] and body["code"]
    return body["message"], body.get("param")


def bomb(mb: int) -> bytes:
    """One gzip member inflating to `mb` MiB of zeros (each MiB compressed once, repeated after a full flush)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(MB)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mb):
        crc = zlib.crc32(zeros, crc)
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return head + block * mb + c.flush() + struct.pack("<II", crc, (mb * MB) & 0xFFFFFFFF)


def status_kib(pid: int, field: str) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


@pytest.mark.parametrize("route", [OPENAI, DS_TEXT, DS_MM])
@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_compressed_bodies_get_exact_vectors(
    api: tuple[Gateway, str], standin: StandIn, route: str, coding: str
) -> None:
    gw, key = api
    body, want = body_of(route, f"compressed {coding} {uuid.uuid4().hex}")
    raw = json.dumps(body).encode()
    packed = gzip.compress(raw) if coding == "gzip" else zlib.compress(raw)
    headers = {"Authorization": f"Bearer {key}", "Content-Encoding": coding, "Content-Type": "application/json"}
    r = httpx.post(gw.url + route, content=packed, headers=headers, timeout=30)
    np.testing.assert_array_equal(vector_of(route, r), want)
    assert len(standin.calls()) == 1


@pytest.mark.parametrize("route", [OPENAI, DS_TEXT, DS_MM])
def test_br_is_415_naming_it(api: tuple[Gateway, str], standin: StandIn, route: str) -> None:
    gw, key = api
    body, _ = body_of(route, "brotli")
    headers = {"Authorization": f"Bearer {key}", "Content-Encoding": "br"}
    r = httpx.post(gw.url + route, content=json.dumps(body).encode(), headers=headers, timeout=30)
    assert r.status_code == 415, r.text
    message, param = error_of(route, r)
    assert "Content-Encoding: br" in message and param == "content-encoding"
    if route == OPENAI:
        assert r.json()["error"]["code"] == "unsupported_content_encoding"
    assert standin.calls() == []


@pytest.mark.parametrize("route", [OPENAI, DS_TEXT])
def test_a_1_gb_gzip_bomb_is_413_at_the_cap_in_bounded_memory(
    api: tuple[Gateway, str], standin: StandIn, route: str
) -> None:
    gw, key = api
    packed = bomb(1024)  # about 1 MB on the wire
    pid = gw.proc.pid
    before = status_kib(pid, "VmRSS")
    headers = {"Authorization": f"Bearer {key}", "Content-Encoding": "gzip"}
    r = httpx.post(gw.url + route, content=packed, headers=headers, timeout=60)
    assert r.status_code == 413, r.text
    message, param = error_of(route, r)
    assert param == "body" and f"larger than {CAP} bytes once inflated" in message
    peak = status_kib(pid, "VmHWM")
    print(
        f"gzip bomb of {len(packed)} bytes (1 GiB inflated): "
        f"RSS before {before / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB"
    )
    # At most the cap, held once as bytes (the budget counts it twice: bytes and what is parsed), and a margin.
    assert (peak - before) * 1024 < 2 * CAP + 64 * MB, (before, peak)
    assert standin.calls() == []
    body, want = body_of(route, f"after the bomb {uuid.uuid4().hex}")
    ok = httpx.post(gw.url + route, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    np.testing.assert_array_equal(vector_of(route, ok), want)


@pytest.mark.parametrize(
    ("route", "name"), [(OPENAI, "Authorization"), (DS_TEXT, "Authorization"), (DS_MM, "X-DashScope-ApiKey")]
)
def test_a_key_header_sent_twice_is_400_naming_it(
    api: tuple[Gateway, str], standin: StandIn, route: str, name: str
) -> None:
    gw, key = api
    body, _ = body_of(route, "twice")
    value = f"Bearer {key}" if name == "Authorization" else key
    headers = httpx.Headers([(name, value), (name, "Bearer sk-someone-else")])
    r = httpx.post(gw.url + route, json=body, headers=headers, timeout=30)
    assert r.status_code == 400, r.text
    message, param = error_of(route, r)
    assert message.startswith(f"{name}: sent more than once") and param == name.lower()
    assert key not in r.text and standin.calls() == []
