"""Secrets (upstream keys, the Redis password, and every secret any gateway of this session was given:
conftest's GatewayFactory collects them from environments and config files) never appear in responses,
metrics, /readyz, the settings dump, or anything the gateways wrote. These tests run last, so the final
grep covers every gateway log of the session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from tests.support.processes import ROOT, SHARED_LOGS, UPSTREAM_KEY, GatewayFactory, StandIn, clean_env, free_port

pytestmark = pytest.mark.run_last

WRONG_KEY = "sk-wrong-key-ABCDEFGH12345678"
FILE_KEY = "sk-from-config-file-9876543210"
REDIS_PASSWORD = "redis-pass-Zq8Lw2Nc5Rt7"
MM = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"


def leaks(text: str, secrets: set[str]) -> list[str]:
    """Secrets found in text, whole or by their middle (a secret with masked ends still leaks)."""
    found = []
    for secret in secrets:
        middle = secret[len(secret) // 5 : len(secret) - len(secret) // 5]
        if secret in text or middle in text:
            found.append(secret[:6] + "...")
    return found


def test_a_rejected_upstream_key_is_never_echoed(gateways: GatewayFactory, standin: StandIn) -> None:
    dead_redis = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    gateways.secrets.add(REDIS_PASSWORD)
    gw = gateways.start(upstream_key=WRONG_KEY, redis_url=dead_redis, env={"LOG_LEVEL": "debug"})
    secrets = {WRONG_KEY, REDIS_PASSWORD}
    bodies = [
        ("/v1/embeddings", {"model": "text-embedding-v4", "input": ["hello", "world"]}),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello"}),
        (MM, {"model": "tongyi-embedding-vision-plus", "input": {"contents": [{"text": "x"}]}}),
    ]
    for path, body in bodies:
        r = gw.post(path, json=body, timeout=30)
        assert r.status_code == 502, r.text
        assert not leaks(r.text, secrets) and not leaks(str(r.headers), secrets)
    for path in ("/metrics", "/readyz", "/v1/models", "/openapi.json", "/healthz"):
        r = httpx.get(gw.url + path, headers=gw.headers, timeout=30)
        assert not leaks(r.text, secrets), path


def test_the_settings_dump_masks_every_secret(tmp_path: Path) -> None:
    config = {
        "redis_url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:6390/0",
        "upstreams": {"mine": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": FILE_KEY}},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    env = clean_env(DASHSCOPE_API_KEY=UPSTREAM_KEY, OPENAI_API_KEY=WRONG_KEY)
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "check-config", "--config", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "**********" in out.stdout
    assert not leaks(out.stdout + out.stderr, {UPSTREAM_KEY, WRONG_KEY, FILE_KEY, REDIS_PASSWORD})


def test_nothing_a_gateway_of_this_session_wrote_or_serves_holds_a_secret(gateways: GatewayFactory) -> None:
    secrets = gateways.secrets | {UPSTREAM_KEY}
    logs = sorted(gateways.logdir.glob("gateway*.log"))
    shared = os.environ.get(SHARED_LOGS)
    if shared:  # the e2e stage's workers (tests/conftest.py): every worker's logs and secrets
        logs = sorted(Path(shared).glob("*/gateway*.log"))
        for listed in Path(shared).glob("*/secrets.txt"):
            secrets |= set(filter(None, listed.read_text().splitlines()))
    assert logs, "no gateway ran in this session"
    for log in logs:
        assert not leaks(log.read_text(errors="replace"), secrets), log.name
    for gw in gateways.started:
        if gw.proc.poll() is None:
            for path in ("/metrics", "/readyz"):
                assert not leaks(httpx.get(gw.url + path, timeout=30).text, secrets), (gw.url, path)


@pytest.mark.parametrize(
    "message",
    [
        f"Incorrect API key provided: {WRONG_KEY}.",
        f"header was Bearer {WRONG_KEY}",
        f"bad request (api_key={WRONG_KEY})",
    ],
)
def test_the_configured_key_in_an_upstream_message_is_masked(message: str) -> None:
    """Masking is by value (app/config/masking.py): the key the settings hold, whatever the words around it."""
    from app.config.masking import Masker, install
    from app.config.settings import Settings
    from app.upstreams.failures import error_from_response
    from app.upstreams.http import Answer

    install(Masker.from_settings(Settings(dashscope_api_key=WRONG_KEY)))
    try:
        response = Answer(400, {}, orjson.dumps({"code": "InvalidParameter", "message": message}))
        err = error_from_response(response, "dashscope")
    finally:
        install(Masker([]))
    assert err.status == 400 and "***" in err.message
    assert not leaks(err.message, {WRONG_KEY})
