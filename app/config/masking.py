"""Secrets masked by value in every text that leaves the process: error messages sent to clients
(api/rendering.render) and log lines (a filter on the log handlers, app/cli.py).

The gateway knows its secrets: the upstream keys and the Redis passwords of its settings. An upstream
may echo one in an error message in any shape (bare, after "Bearer ", inside a URL, JSON-escaped,
base64 in a Basic credential), so masking by the look of a key (`sk-...`) misses those without the
prefix. Here every configured secret, in each of those shapes, is compiled once into one
case-insensitive pattern; a match becomes `***`. Base64 is matched by its stable middle at each of the
three byte alignments, so a secret encoded after a user name (`user:secret`) is caught too.

`install` is called once per process by create_app; until then (and with no secrets) nothing is masked.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, unquote, urlsplit

import orjson

if TYPE_CHECKING:
    from .settings import Settings

MASK = "***"
MIN_SECRET_CHARS = 6  # shorter values are too likely to be ordinary words to be masked everywhere


def _base64_cores(secret: bytes) -> set[str]:
    """The part of the base64 text of `secret` that does not depend on what comes before or after it."""
    cores = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + secret).decode()
        start = 4 if shift else 0
        end = 4 * ((shift + len(secret)) // 3)
        core = encoded[start:end]
        if len(core) >= 8:
            cores |= {core, core.replace("+", "-").replace("/", "_")}
    return cores


def shapes(secret: str) -> set[str]:
    """The texts that stand for `secret`: itself, URL-encoded, JSON-escaped and base64-encoded."""
    out = {secret, quote(secret, safe=""), quote_plus(secret), orjson.dumps(secret).decode()[1:-1]}
    out |= _base64_cores(secret.encode())
    return {s for s in out if len(s) >= MIN_SECRET_CHARS}


class Masker:
    def __init__(self, secrets: Iterable[str]) -> None:
        found = {shape for secret in secrets if len(secret) >= MIN_SECRET_CHARS for shape in shapes(secret)}
        alternatives = "|".join(re.escape(s) for s in sorted(found, key=len, reverse=True))
        self.pattern = re.compile(alternatives, re.IGNORECASE) if found else None

    def __call__(self, text: str) -> str:
        return self.pattern.sub(MASK, text) if self.pattern is not None and text else text

    @classmethod
    def from_settings(cls, settings: Settings) -> Masker:
        return cls(secrets_of(settings))


def _url_password(url: str | None) -> list[str]:
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        return [url]  # an unparsable URL is masked whole
    return [password, unquote(password)] if password else []


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value in the settings: upstream keys (from the settings or their environment
    variables) and the passwords of the Redis URLs."""
    found = [key for cfg in settings.upstream_configs().values() if (key := cfg.key())]
    for url in (settings.redis_url, settings.limits_redis_url):
        found += _url_password(url.get_secret_value() if url is not None else None)
    return found


_active = Masker(())


def install(masker: Masker) -> None:
    global _active
    _active = masker


def mask(text: str) -> str:
    return _active(text)


class SecretsFilter(logging.Filter):
    """Masks the message and the traceback of every record a handler writes (log config: app/cli.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        masker = _active
        if masker.pattern is None:
            return True
        record.msg, record.args = masker(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = masker(record.exc_text)
        if record.stack_info:
            record.stack_info = masker(record.stack_info)
        return True
