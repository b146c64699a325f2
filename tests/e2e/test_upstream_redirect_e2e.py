"""Issue 19, item 6: an upstream that answers a redirect (307) is a configuration error: a 502 naming the
redirect (its target without query or credentials), in the caller's wire format, after one call: never
retried, never followed, never counted against the upstream's breaker (more calls than `breaker_failures`
all reach it)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Gateway, GatewayFactory
from tests.support.teamkit import DS_TEXT, OPENAI, write_config

SECRET = "sig-" + uuid.uuid4().hex
TARGET = f"https://user:{SECRET}@dashscope.example.com/api/v1/services/x?token={SECRET}"


class Redirector(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(307)
        self.send_header("Location", TARGET)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def redirector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def redirected(
    gateways: GatewayFactory, redirector: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Gateway, str]:
    config: Path = tmp_path_factory.mktemp("redirect") / "gateway.yaml"
    keys = write_config(config, {"team": {}})
    gateways.secrets.update(keys.values())
    env = {"DASHSCOPE_BASE_URL": redirector + "/api/v1", "BREAKER_FAILURES": "3"}
    return gateways.start(config=str(config), env=env), keys["team"]


def breaker_open(gw: Gateway) -> float:
    lines = httpx.get(gw.url + "/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("gateway_breaker_open{"))


@pytest.mark.parametrize("route", [OPENAI, DS_TEXT])
def test_a_redirect_is_one_call_a_502_naming_it_and_no_breaker_failure(
    redirected: tuple[Gateway, str], route: str
) -> None:
    gw, key = redirected
    headers = {"Authorization": f"Bearer {key}"}
    for i in range(6):  # twice the breaker's threshold: every request still reaches the upstream, once
        before = Redirector.calls
        text = f"redirected {i} {uuid.uuid4().hex}"
        body = (
            {"model": "text-embedding-v4", "input": text}
            if route == OPENAI
            else {"model": "text-embedding-v4", "input": {"texts": [text]}}
        )
        r = httpx.post(gw.url + route, json=body, headers=headers, timeout=30)
        assert r.status_code == 502, r.text
        assert Redirector.calls == before + 1  # not retried, not followed
        message = r.json()["error"]["message"] if route == OPENAI else r.json()["message"]
        code = r.json()["error"]["code"] if route == OPENAI else r.json()["code"]
        assert "307" in message and "redirect" in message, message
        assert "https://dashscope.example.com/api/v1/services/x" in message and SECRET not in message, message
        assert code == ("upstream_redirect" if route == OPENAI else "InternalError.Upstream")
    assert breaker_open(gw) == 0
    assert SECRET not in gw.output()
