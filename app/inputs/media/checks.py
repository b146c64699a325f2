"""Media references: data URIs decoded and checked by their real format, URLs checked by scheme.

Everything here is pure and raises InvalidRequest naming the field (`param`), so bad media costs no
upstream call.
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from ...errors import InvalidRequest, PayloadTooLarge
from .formats import MIME_FORMATS, sniff_format

MAX_URL_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Media:
    """A checked reference: `wire` is what the upstream receives, `identity` what the cache key hashes."""

    wire: str
    identity: str


def check_url(value: str, param: str) -> Media:
    if len(value) > MAX_URL_CHARS:
        raise InvalidRequest(f"{param}: URL longer than {MAX_URL_CHARS} characters", param=param)
    if any(c.isspace() or c < "\x20" or c == "\x7f" for c in value):
        raise InvalidRequest(f"{param}: URL must not contain white space or control characters", param=param)
    try:
        parts = urlsplit(value)
        host, _ = parts.hostname, parts.port  # both parse lazily: an unbalanced [ or a bad port raise here
    except ValueError:
        raise InvalidRequest(f"{param}: not a valid URL (host or port does not parse)", param=param) from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequest(f"{param}: must be an http(s) URL or a data URI", param=param)
    if not host:
        raise InvalidRequest(f"{param}: URL has no host", param=param)
    return Media(wire=value, identity="url:" + value)


def check_image(value: object, param: str, *, max_bytes: int, formats: frozenset[str]) -> Media:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{param}: must be a non-empty string (an http(s) URL or a data URI)", param=param)
    if not value.startswith("data:"):
        return check_url(value, param)
    header, sep, payload = value.partition(",")
    if not sep or not header.endswith(";base64") or not header[5:].startswith("image/"):
        raise InvalidRequest(f"{param}: data URI must look like data:image/<format>;base64,<data>", param=param)
    declared = MIME_FORMATS.get(header[11:-7].lower())
    if len(payload) > (max_bytes * 4) // 3 + 8:
        raise PayloadTooLarge(f"{param}: image larger than {max_bytes} bytes", param=param)
    try:
        data = binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{param}: data URI holds invalid base64", param=param) from None
    if not data:
        raise InvalidRequest(f"{param}: image is empty", param=param)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{param}: image larger than {max_bytes} bytes", param=param)
    real = sniff_format(data)
    if real is None:
        raise InvalidRequest(f"{param}: bytes are not a recognised image format", param=param)
    if declared is not None and declared != real:
        raise InvalidRequest(f"{param}: declared image/{header[11:-7]} but the bytes are {real}", param=param)
    if real not in formats:
        allowed = ", ".join(sorted(formats))
        raise InvalidRequest(f"{param}: {real} images are not accepted by this model ({allowed})", param=param)
    return Media(wire=value, identity="sha256:" + hashlib.sha256(data).hexdigest())


def check_video(value: object, param: str) -> Media:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{param}: must be an http(s) URL", param=param)
    if value.startswith("data:"):
        raise InvalidRequest(f"{param}: video is accepted by URL only, not as a data URI", param=param)
    return check_url(value, param)
