"""What several test modules share: built-in model specs, and tiny valid images built in the test (no
imaging library): PNG with zlib + struct, baseline JPEG with a DC-only 8x8 grayscale block, and the other
formats' headers for magic-byte checks. Different pixel values give different bytes, so different images."""

from __future__ import annotations

import base64
import struct
import zlib

from app.config.catalog import BUILT_IN, ModelSpec


def spec(name: str, **override: object) -> ModelSpec:
    """A built-in model's spec, as the catalog builds it, with fields overridden."""
    return ModelSpec(name=name, **{"upstream_model": name, **BUILT_IN[name], **override})


PLUS = spec("tongyi-embedding-vision-plus")
DATED = spec("tongyi-embedding-vision-plus-2026-03-06")
QWEN = spec("qwen3-vl-embedding")
V4 = spec("text-embedding-v4")
SMALL = spec("text-embedding-3-small")


def png(pixels: bytes | list[int], width: int | None = None) -> bytes:
    """An 8-bit grayscale PNG of one row (or `width` columns per row)."""
    data = bytes(pixels)
    width = width or len(data)
    rows = [data[i : i + width] for i in range(0, len(data), width)]
    raw = b"".join(b"\x00" + row for row in rows)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, len(rows), 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# Standard luminance Huffman tables (ITU T.81 K.3): DC codes by category, the AC table's EOB code.
_DC_BITS = bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
_DC_VALS = bytes(range(12))
_DC_CODES = {0: "00", 1: "010", 2: "011", 3: "100", 4: "101", 5: "110", 6: "1110", 7: "11110", 8: "111110"}
_AC_BITS = bytes([0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # one code of length 2
_AC_VALS = bytes([0x00])  # EOB -> "00"


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def jpeg(gray: int, comment: bytes = b"") -> bytes:
    """A valid 8x8 baseline grayscale JPEG of one flat gray level (0..255), optionally with a COM segment."""
    dc = gray - 128  # a flat block's DCT DC is 8 * (gray - 128); the DC quantiser is 8
    category = abs(dc).bit_length()
    bits = format(dc if dc >= 0 else dc + (1 << category) - 1, f"0{category}b") if category else ""
    stream = _DC_CODES[category] + bits + "00"  # DC, then EOB for the AC coefficients
    stream += "1" * (-len(stream) % 8)
    entropy = bytes(int(stream[i : i + 8], 2) for i in range(0, len(stream), 8)).replace(b"\xff", b"\xff\x00")
    parts = [
        b"\xff\xd8",
        _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
        _segment(0xFE, comment) if comment else b"",
        _segment(0xDB, b"\x00" + bytes([8] + [1] * 63)),
        _segment(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00"),
        _segment(0xC4, b"\x00" + _DC_BITS + _DC_VALS),
        _segment(0xC4, b"\x10" + _AC_BITS + _AC_VALS),
        _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),
        entropy,
        b"\xff\xd9",
    ]
    return b"".join(parts)


def bmp() -> bytes:
    """A 1x1 24-bit BMP."""
    pixel = b"\x10\x20\x30\x00"
    header = struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, len(pixel), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(header) + len(pixel), 0, 0, 14 + len(header)) + header + pixel


def gif() -> bytes:
    return bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


def webp() -> bytes:
    body = b"WEBPVP8L" + struct.pack("<I", 5) + b"\x2f\x00\x00\x00\x00" + b"\x00"
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tiff() -> bytes:
    return b"II*\x00\x08\x00\x00\x00" + b"\x00\x00" + b"\x00\x00\x00\x00"


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
