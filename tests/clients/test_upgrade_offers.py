"""Clients that offer an h2c upgrade on plain HTTP get their request served as HTTP/1.1, body included:
the JDK's default HttpClient (a single-file Java program run with Debian's openjdk), `curl --http2`, and
raw connections for the traps (a body split across packets, keep-alive and pipelined requests after the
declined offer, a truncated body, CONNECT). The gateway is a real process with team keys required."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid

import numpy as np
import pytest

from bench.standin import expected_vector
from tests.support.processes import ROOT, Gateway, GatewayFactory, StandIn
from tests.support.teamkit import write_config

JAVA_CLIENT = ROOT / "tests" / "clients" / "java" / "EmbedClient.java"
MODEL = "text-embedding-v4"
OFFER = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: scripts/test.sh installs it")
        pytest.skip(f"{tool} is not installed")
    return path


@pytest.fixture(scope="module")
def keyed(gateways: GatewayFactory, tmp_path_factory: pytest.TempPathFactory) -> tuple[Gateway, str]:
    config = tmp_path_factory.mktemp("upgrade") / "gateway.yaml"
    keys = write_config(config, {"java": {}})
    return gateways.start(config=str(config), env={"GATEWAY_AUTH": "required"}), keys["java"]


def vector_of(body: str) -> np.ndarray:
    return np.asarray(json.loads(body)["data"][0]["embedding"], dtype=np.float32)


def test_the_jdk_default_http_client_gets_the_vectors_and_a_404(keyed: tuple[Gateway, str], standin: StandIn) -> None:
    java = need("java")
    gw, key = keyed
    text = f"from java {uuid.uuid4().hex[:8]}"
    out = subprocess.run(
        [java, str(JAVA_CLIENT), gw.url, key, MODEL, text], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout
    status, version, body = lines[0].split("\t", 2)
    assert (status, version) == ("200", "HTTP_1_1"), body
    np.testing.assert_array_equal(vector_of(body), expected_vector(MODEL, 1024, text))
    status, _, body = lines[1].split("\t", 2)
    assert status == "404" and json.loads(body)["error"]["code"] == "model_not_found", body
    assert len(standin.calls()) == 1


def test_curl_http2_on_plain_http_gets_the_vectors_and_a_404(keyed: tuple[Gateway, str], standin: StandIn) -> None:
    curl = need("curl")
    features = subprocess.run([curl, "-V"], capture_output=True, text=True, check=True).stdout
    assert "HTTP2" in features, "this curl has no HTTP/2: --http2 would not offer h2c"
    gw, key = keyed
    text = f"from curl {uuid.uuid4().hex[:8]}"
    for model, want in ((MODEL, 200), ("no-such-model", 404)):
        body = json.dumps({"model": model, "input": text, "encoding_format": "float"})
        out = subprocess.run(
            [curl, "--http2", "-sS", "-v", "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
             "-d", body, "-w", "\n%{http_code}", gw.url + "/v1/embeddings"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "Upgrade: h2c" in out.stderr, "curl did not offer h2c"
        answer, code = out.stdout.rsplit("\n", 1)
        assert int(code) == want, answer
        if want == 200:
            np.testing.assert_array_equal(vector_of(answer), expected_vector(MODEL, 1024, text))
    assert len(standin.calls()) == 1


def request(body: bytes, key: str, offer: bool, chunked: bool = False, extra: bytes = b"") -> tuple[bytes, bytes]:
    head = b"POST /v1/embeddings HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
    head += b"Authorization: Bearer " + key.encode() + b"\r\n" + (OFFER if offer else b"") + extra
    if chunked:
        return head + b"Transfer-Encoding: chunked\r\n\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    return head + b"Content-Length: %d\r\n\r\n" % len(body), body


def read_responses(sock: socket.socket, n: int, timeout: float = 20.0) -> list[tuple[int, bytes]]:
    """n HTTP/1.1 responses with Content-Length bodies, in order."""
    sock.settimeout(timeout)
    buf, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses: {buf[:300]!r}"
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        length = int(
            next(v for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")) if k.lower() == b"content-length")
        )
        while len(buf) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-body"
            buf += chunk
        out.append((int(head.split(b" ")[1]), buf[:length]))
        buf = buf[length:]
    return out


def embed_body(text: str) -> bytes:
    return json.dumps({"model": MODEL, "input": text, "encoding_format": "float"}).encode()


def test_split_body_keep_alive_and_pipelined_requests_after_an_offer(
    keyed: tuple[Gateway, str], standin: StandIn
) -> None:
    gw, key = keyed
    texts = [f"pipelined {i} {uuid.uuid4().hex[:8]}" for i in range(3)]
    with socket.create_connection((gw.url.split("//")[1].split(":")[0], int(gw.url.rsplit(":", 1)[1]))) as sock:
        head, body = request(embed_body(texts[0]), key, offer=True, chunked=True)
        sock.sendall(head + body[:7])  # the head, the chunk size and part of the chunk
        time.sleep(0.3)  # the rest of the body comes in a later read (the split is the behaviour under test)
        sock.sendall(body[7:])
        assert read_responses(sock, 1)[0][0] == 200  # keep-alive: the same connection goes on
        second = b"".join(request(embed_body(texts[1]), key, offer=False))
        third = b"".join(request(embed_body(texts[2]), key, offer=True))
        sock.sendall(second + third)  # pipelined, the second one offering again
        answers = read_responses(sock, 2)
    got = [json.loads(b)["data"][0]["embedding"] for _, b in answers]
    assert [s for s, _ in answers] == [200, 200]
    for vector, text in zip(got, texts[1:], strict=True):
        np.testing.assert_array_equal(np.asarray(vector, dtype=np.float32), expected_vector(MODEL, 1024, text))


def test_a_truncated_body_after_an_offer_is_not_served(keyed: tuple[Gateway, str], standin: StandIn) -> None:
    gw, key = keyed
    host, port = "127.0.0.1", int(gw.url.rsplit(":", 1)[1])
    head, body = request(embed_body("truncated " + uuid.uuid4().hex), key, offer=True)
    with socket.create_connection((host, port)) as sock:
        sock.sendall(head + body[: len(body) // 2])
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(20)
        assert sock.recv(65536) == b""  # closed without an answer: nothing complete to answer
    with socket.create_connection((host, port)) as sock:  # CONNECT is not replayed: answered, not looped
        sock.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        sock.settimeout(20)
        assert sock.recv(65536).split(b" ")[1] in (b"404", b"405", b"400")
    assert standin.calls() == []
