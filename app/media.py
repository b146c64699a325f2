"""Media references: data URIs decoded and checked by their real format, URLs checked by scheme.

Everything here is pure and raises InvalidRequest naming the field (`param`), so bad media costs no
upstream call.
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import InvalidRequest, PayloadTooLarge

MAX_URL_CHARS = 4096

# Magic bytes -> format name. Order matters only where prefixes overlap (none do here).
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"BM", 0, "bmp"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
    (b"WEBP", 8, "webp"),
)
MIME_FORMATS = {
    "jpeg": "jpeg",
    "jpg": "jpeg",
    "pjpeg": "jpeg",
    "png": "png",
    "bmp": "bmp",
    "x-ms-bmp": "bmp",
    "gif": "gif",
    "tiff": "tiff",
    "webp": "webp",
}


@dataclass(frozen=True, slots=True)
class Media:
    """A checked reference: `wire` is what the upstream receives, `identity` what the cache key hashes."""

    wire: str
    identity: str


def sniff_format(data: bytes) -> str | None:
    for magic, offset, name in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if name == "webp" and data[:4] != b"RIFF":
                continue
            return name
    return None


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
