"""Image formats: the magic bytes that say what an image really is, and the MIME subtypes that name them."""

from __future__ import annotations

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


def sniff_format(data: bytes) -> str | None:
    for magic, offset, name in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if name == "webp" and data[:4] != b"RIFF":
                continue
            return name
    return None
