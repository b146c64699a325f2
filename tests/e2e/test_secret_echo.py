"""Masking by value, end to end: an upstream that echoes every configured secret (the upstream keys, none
of them shaped like `sk-...`, and the Redis password) in several shapes in its error messages. The
gateway's answers (bodies and headers, both wire formats) and everything it logged hold none of them."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support.processes import GatewayFactory, free_port

DASHSCOPE_KEY = "dsk9F2kq7LmN4xZp8RtW"
OPENAI_KEY = "oai/Key+With=Specials42"
REDIS_PASSWORD = "rp4ss-W0rd_echo-91"
SECRETS = (DASHSCOPE_KEY, OPENAI_KEY, REDIS_PASSWORD)
MM = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"


def echoed(secret: str) -> str:
    basic = base64.b64encode(f"gateway:{secret}".encode()).decode()
    return (
        f"key {secret} is not valid; Authorization: Bearer {secret}; url redis://:{quote(secret, safe='')}@db:6379; "
        f"basic {basic}; upper {secret.upper()}; json {json.dumps({'k': secret})}"
    )


class _Echo(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        message = " | ".join(echoed(s) for s in SECRETS)
        status = 500 if self.path.startswith("/v1/") else 400  # OpenAI kind: a failure; DashScope: a refusal
        body = json.dumps({"code": message[:40], "message": message, "error": {"message": message, "code": "bad"}})
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def leaks(text: str) -> list[str]:
    found = []
    for secret in SECRETS:
        middle = secret[len(secret) // 4 : len(secret) - len(secret) // 4]
        variants = {middle, middle.upper(), quote(middle, safe="")}
        if any(v in text for v in variants) or base64.b64encode(secret.encode()).decode()[4:-4] in text:
            found.append(secret[:4] + "...")
    return found


def test_an_upstream_echoing_every_secret_leaks_none(gateways: GatewayFactory, echo: str) -> None:
    gateways.secrets.update(SECRETS)
    env = {
        "DASHSCOPE_BASE_URL": echo + "/api/v1",
        "OPENAI_BASE_URL": echo + "/v1",
        "OPENAI_API_KEY": OPENAI_KEY,
        "RETRY_ATTEMPTS": "2",
        "LOG_LEVEL": "debug",
    }
    gw = gateways.start(
        upstream_key=DASHSCOPE_KEY, redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0", env=env
    )
    calls = [
        ("/v1/embeddings", {"model": "text-embedding-v4", "input": ["a", "b"]}),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello"}),
        (MM, {"model": "tongyi-embedding-vision-plus", "input": {"contents": [{"text": "x"}]}}),
        (
            "/api/v1/services/embeddings/text-embedding/text-embedding",
            {"model": "text-embedding-v4", "input": {"texts": ["y"]}},
        ),
    ]
    statuses = set()
    for path, body in calls:
        r = gw.post(path, json=body, timeout=60)
        statuses.add(r.status_code)
        assert r.status_code in (400, 502), r.text
        assert "***" in r.text, r.text  # the message came through, masked
        assert not leaks(r.text) and not leaks(str(r.headers)), (path, r.text)
    assert statuses == {400, 502}
    for path in ("/metrics", "/readyz", "/v1/models"):
        assert not leaks(httpx.get(gw.url + path, headers=gw.headers, timeout=30).text), path
    log = gw.output()
    assert '"status":502' in log and '"status":400' in log  # the access log saw them
    assert not leaks(log), leaks(log)
