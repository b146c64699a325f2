"""Masking by value: each configured secret, in every shape an upstream or a library may echo it, is
masked; the masker is built from the settings (upstream keys from the settings or the environment,
Redis passwords)."""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import quote

import pytest

from app.config.masking import MASK, Masker, SecretsFilter, install, secrets_of
from app.config.settings import Settings

KEY = "k3y-without-prefix-7Qx9Zt2Lm"
PASSWORD = "p@ss/w0rd+Redis=1"


def echoes(secret: str) -> list[str]:
    """Texts an upstream or a client library may produce around a secret."""
    basic = base64.b64encode(f"user:{secret}".encode()).decode()
    return [
        f"invalid key {secret}",
        f"Authorization: Bearer {secret}",
        f"api_key={quote(secret, safe='')}&x=1",
        json.dumps({"key": secret}),
        f"Authorization: Basic {basic}",
        f"url redis://:{quote(secret, safe='')}@host:6379/0",
        f"KEY IN CAPITALS: {secret.upper()}",
        base64.urlsafe_b64encode(secret.encode()).decode(),
    ]


@pytest.mark.parametrize("secret", [KEY, PASSWORD, "sk-" + "a" * 40])
def test_every_shape_of_a_secret_is_masked(secret: str) -> None:
    masker = Masker([secret])
    for text in echoes(secret):
        masked = masker(text)
        middle = secret[len(secret) // 4 : -len(secret) // 4]
        assert middle not in masked and middle.upper() not in masked, (text, masked)
        assert MASK in masked, text


def test_text_without_secrets_is_unchanged_and_short_values_are_not_masked() -> None:
    masker = Masker([KEY, "abc"])
    assert masker("model text-embedding-v4 answered abc") == "model text-embedding-v4 answered abc"
    assert Masker([])("anything") == "anything"


def test_the_settings_give_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY_ENV", "from-environment-5551212")
    settings = Settings(
        dashscope_api_key=KEY,
        openai_api_key="openai-key-ABCDEFGH",
        redis_url=f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:6390/0",
        limits_redis_url="rediss://user:limits-pass-998877@127.0.0.1:6391/0",
        upstreams={"mine": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "MY_KEY_ENV"}},
    )
    found = set(secrets_of(settings))
    assert {KEY, "openai-key-ABCDEFGH", PASSWORD, "limits-pass-998877", "from-environment-5551212"} <= found


def test_log_records_are_masked_message_and_traceback(caplog: pytest.LogCaptureFixture) -> None:
    install(Masker([KEY]))
    try:
        logger = logging.getLogger("test_masking")
        handler = logging.StreamHandler()
        records: list[str] = []
        handler.emit = lambda record: records.append(handler.format(record))  # type: ignore[method-assign]
        handler.addFilter(SecretsFilter())
        logger.addHandler(handler)
        try:
            raise RuntimeError(f"upstream said {KEY}")
        except RuntimeError:
            logger.exception("failed with %s", KEY)
        logger.removeHandler(handler)
        assert records and all(KEY not in r for r in records)
        assert "RuntimeError" in records[0] and MASK in records[0]
    finally:
        install(Masker([]))
