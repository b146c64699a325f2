"""Media: data URIs decoded and checked by their real format (magic bytes), URLs checked by scheme."""

from __future__ import annotations

import base64
import hashlib

import pytest

from app.errors import InvalidRequest, PayloadTooLarge
from app.inputs.media.checks import check_image, check_video
from app.inputs.media.formats import sniff_format
from tests.support.samples import bmp, data_uri, gif, jpeg, png, tiff, webp

ALL = frozenset({"jpeg", "png", "bmp", "webp", "gif", "tiff"})
CLASSIC = frozenset({"jpeg", "png", "bmp"})
MB = 1024 * 1024


def image(value: object, *, max_bytes: int = 3 * MB, formats: frozenset[str] = ALL) -> str:
    return check_image(value, "input[3].image", max_bytes=max_bytes, formats=formats).identity


@pytest.mark.parametrize(
    ("data", "name"),
    [(jpeg(10), "jpeg"), (png([1]), "png"), (bmp(), "bmp"), (webp(), "webp"), (gif(), "gif"), (tiff(), "tiff")],
)
def test_magic_bytes(data: bytes, name: str) -> None:
    assert sniff_format(data) == name
    mime = {"jpeg": "image/jpeg", "bmp": "image/bmp", "tiff": "image/tiff"}.get(name, f"image/{name}")
    assert image(data_uri(data, mime)) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_big_endian_tiff_and_jpg_alias() -> None:
    assert sniff_format(b"MM\x00*\x00\x00\x00\x08") == "tiff"
    assert image(data_uri(jpeg(3), "image/jpg")) == image(data_uri(jpeg(3), "image/jpeg"))


def test_unknown_bytes_and_riff_that_is_not_webp() -> None:
    assert sniff_format(b"hello world") is None
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff_format(b"XXXX\x00\x00\x00\x00WEBPVP8 ") is None


def test_url_identity_is_the_url_string() -> None:
    assert image("https://example.com/a.png") == "url:https://example.com/a.png"
    assert image("http://example.com/a.png?x=1") == "url:http://example.com/a.png?x=1"


def refused(value: object, *, status: int = 400, max_bytes: int = 3 * MB, formats: frozenset[str] = ALL) -> str:
    err = InvalidRequest if status == 400 else PayloadTooLarge
    with pytest.raises(err) as info:
        image(value, max_bytes=max_bytes, formats=formats)
    assert info.value.status == status
    assert info.value.param == "input[3].image"
    assert info.value.message.startswith("input[3].image: ")
    return info.value.message


def test_declared_type_must_match_the_bytes() -> None:
    assert "declared image/png but the bytes are jpeg" in refused(data_uri(jpeg(1), "image/png"))
    assert "bytes are gif" in refused(data_uri(gif(), "image/jpeg"))


def test_format_the_model_does_not_take() -> None:
    assert "webp images are not accepted" in refused(data_uri(webp(), "image/webp"), formats=CLASSIC)


def test_bytes_that_are_no_image() -> None:
    assert "not a recognised image format" in refused(data_uri(b"just some text", "image/png"))


@pytest.mark.parametrize(
    "payload",
    ["!!!!", "abc", "iVBORw0KGgo=x", "iVBO Rw0K", base64.b64encode(png([1])).decode()[:-2] + "\n=="],
)
def test_invalid_base64(payload: str) -> None:
    assert "invalid base64" in refused("data:image/png;base64," + payload)


def test_line_wrapped_base64_is_refused_by_strict_decoding() -> None:
    # Strict decoding refuses MIME line breaks: the same image wrapped differently is never two keys.
    raw = base64.b64encode(png(list(range(100)))).decode()
    wrapped = "\n".join(raw[i : i + 20] for i in range(0, len(raw), 20))
    assert "invalid base64" in refused("data:image/png;base64," + wrapped)


def test_empty_and_malformed_data_uris() -> None:
    refused("data:image/png;base64,")
    assert "data:image/<format>;base64" in refused("data:image/png," + base64.b64encode(png([1])).decode())
    assert "data:image/<format>;base64" in refused("data:text/plain;base64,aGVsbG8=")
    assert "data:image/<format>;base64" in refused("data:image/png;base64")
    refused("")
    refused(None)
    refused(["https://example.com/a.png"])


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "oss://bucket/a.png",
        "javascript:alert(1)",
        "gopher://example.com/",
        "https://",
        "example.com/a.png",
        "https://example.com/a b.png",
        "https://example.com/" + "a" * 5000,
    ],
)
def test_urls_other_than_http_are_refused(url: str) -> None:
    refused(url)
    with pytest.raises(InvalidRequest) as info:
        check_video(url, "input.contents[0].video")
    assert info.value.param == "input.contents[0].video"


def test_size_cap_is_413_whether_caught_by_the_text_length_or_the_bytes() -> None:
    raw = png(list(range(256)) * 40)
    assert len(raw) > 100
    refused(data_uri(raw), status=413, max_bytes=100)
    assert image(data_uri(raw), max_bytes=len(raw))
    refused(data_uri(raw), status=413, max_bytes=len(raw) - 1)


def test_video_by_url_only() -> None:
    assert check_video("https://example.com/v.mp4", "p").identity == "url:https://example.com/v.mp4"
    with pytest.raises(InvalidRequest, match="URL only"):
        check_video("data:video/mp4;base64,AAAAIGZ0eXBpc29t", "input[0].video")
    with pytest.raises(InvalidRequest):
        check_video(42, "input[0].video")
