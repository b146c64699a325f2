"""Items: every input form of both wire shapes, limits, and the field path each error names."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from app.config.catalog import ModelSpec
from app.errors import GatewayError, InvalidRequest, PayloadTooLarge
from app.inputs import items as items_module
from app.inputs.items import (
    MEMO_TEXT_CHARS,
    MEMO_TEXTS,
    MEMO_TEXTS_BYTES,
    Item,
    TextItems,
    content_item,
    dashscope_contents,
    dashscope_texts,
    each_openai_item,
    fuse_all,
    openai_items,
)
from tests.support.memory import assert_counted, traced_and_counted
from tests.support.samples import DATED, PLUS, QWEN, SMALL, V4, data_uri, jpeg, png, spec

PNG = data_uri(png([1, 2, 3]))
JPEG = data_uri(jpeg(77), "image/jpeg")
URL = "https://example.com/a.png"
TABLES = 48 * MEMO_TEXTS  # the memo's two dicts' tables: ~36 bytes a slot, sized for the full one while it is freed
VIDEO = "https://example.com/clip.mp4"


def fails(exc: type[GatewayError], param: str) -> pytest.RaisesExc[GatewayError]:
    return pytest.raises(exc, match=r"^" + param.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.") + ":")


def test_a_bare_string_and_a_text_object_are_the_same_item() -> None:
    a = content_item("x", PLUS, "input[0]")
    b = content_item({"text": "x"}, PLUS, "input[0]")
    assert a == b
    assert a.modality == "text" and a.parts == {"text": "x"}


def test_image_by_url_keeps_the_url_as_its_identity() -> None:
    it = content_item({"image": URL}, PLUS, "input[0]")
    assert it.modality == "image" and it.parts == {"image": URL}
    assert URL.encode() in it.identity


def test_image_by_data_uri_is_identified_by_its_decoded_bytes() -> None:
    raw = png([9, 9, 9])
    a = content_item({"image": data_uri(raw)}, PLUS, "p")
    b = content_item({"image": data_uri(raw, "image/PNG")}, PLUS, "p")
    c = content_item({"image": data_uri(png([9, 9, 8]))}, PLUS, "p")
    assert a.parts["image"].startswith("data:image/png;base64,")
    assert base64.b64encode(raw).decode() not in a.identity.decode()  # the hash of the bytes, not the text
    assert a.identity == b.identity != c.identity


def test_video_and_multi_images() -> None:
    v = content_item({"video": VIDEO}, PLUS, "p")
    assert v.modality == "video" and v.parts == {"video": VIDEO}
    m = content_item({"multi_images": [URL, PNG, JPEG]}, PLUS, "p")
    assert m.modality == "multi_images" and m.parts == {"multi_images": [URL, PNG, JPEG]}
    assert m.identity != content_item({"multi_images": [PNG, URL, JPEG]}, PLUS, "p").identity  # order matters


def test_fused_objects_only_on_models_that_fuse() -> None:
    it = content_item({"text": "red bike", "image": URL}, DATED, "input[2]")
    assert it.modality == "fused" and it.parts == {"text": "red bike", "image": URL}
    with fails(InvalidRequest, "input[2]"):
        content_item({"text": "red bike", "image": URL}, PLUS, "input[2]")


def test_factor_is_kept_and_part_of_the_identity() -> None:
    a = content_item({"text": "x", "factor": 2}, PLUS, "p")
    assert a.parts == {"text": "x", "factor": 2}
    assert a.identity != content_item({"text": "x"}, PLUS, "p").identity
    assert a.identity != content_item({"text": "x", "factor": 3}, PLUS, "p").identity
    with fails(InvalidRequest, "input[1].factor"):
        content_item({"text": "x", "factor": "big"}, PLUS, "input[1]")
    with fails(InvalidRequest, "input[1].factor"):
        content_item({"text": "x", "factor": True}, PLUS, "input[1]")


def test_openai_input_forms() -> None:
    assert [it.parts for it in openai_items("one", V4, 10)] == [{"text": "one"}]
    assert [it.parts for it in openai_items(["a", {"text": "b"}], V4, 10)] == [{"text": "a"}, {"text": "b"}]
    tokens = openai_items([1, 2, 3], SMALL, 10)
    assert [it.parts for it in tokens] == [{"tokens": [1, 2, 3]}]
    lists = openai_items([[1, 2], [3]], SMALL, 10)
    assert [it.parts for it in lists] == [{"tokens": [1, 2]}, {"tokens": [3]}]
    mixed = openai_items(["a", {"image": URL}, {"video": VIDEO}], PLUS, 10)
    assert [it.modality for it in mixed] == ["text", "image", "video"]


@pytest.mark.parametrize(
    ("raw", "model", "param"),
    [
        ([], V4, "input"),
        ("", V4, "input"),
        ("   ", V4, "input"),
        (5, V4, "input"),
        ({"text": "x"}, V4, "input"),
        (["a"] * 11, V4, "input"),
        (["a", "b", "c", 7], V4, "input[3]"),
        (["a", "b", "c", None], V4, "input[3]"),
        (["a", ""], V4, "input[1]"),
        (["a", {"image": URL}], V4, "input[1].image"),
        (["a", "b", "c", {"image": "ftp://example.com/x.png"}], PLUS, "input[3].image"),
        (["a", "b", "c", {"image": 12}], PLUS, "input[3].image"),
        ([{"video": "data:video/mp4;base64,AAAA"}], PLUS, "input[0].video"),
        ([{"multi_images": [URL] * 9}], PLUS, "input[0].multi_images"),
        ([{"multi_images": []}], PLUS, "input[0].multi_images"),
        ([{"multi_images": [URL, "data:image/png;base64,!!"]}], PLUS, "input[0].multi_images[1]"),
        ([{"text": "x", "audio": URL}], PLUS, "input[0].audio"),
        ([{}], PLUS, "input[0]"),
        ([{"factor": 1}], PLUS, "input[0]"),
        ([{"text": 5}], PLUS, "input[0].text"),
        ([{"multi_images": [URL]}], QWEN, "input[0].multi_images"),
        ([[1, 100256]], V4, "input[0]"),  # decoded for a text upstream: 100256 is no cl100k_base token
        ([100256], V4, "input"),
        ([[1, -2]], SMALL, "input[0]"),
        ([[]], SMALL, "input[0]"),
        (["x" * 4097], PLUS, "input[0]"),
    ],
)
def test_openai_errors_name_the_field(raw: object, model: ModelSpec, param: str) -> None:
    for texts in (None, TextItems()):  # the same errors with the items of recent texts
        with pytest.raises(InvalidRequest) as info:
            list(each_openai_item(raw, model, 10, texts))
        assert info.value.param == param
        assert info.value.message.startswith(param + ":")
        assert info.value.status == 400


def test_recent_texts_share_their_items_and_each_request_is_still_checked() -> None:
    texts = TextItems()
    first = list(each_openai_item(["a", "b"], V4, 10, texts))
    again = list(each_openai_item(["b", "a"], V4, 10, texts))
    assert first == openai_items(["a", "b"], V4, 10)
    assert again[0] is first[1] and again[1] is first[0]
    assert list(each_openai_item(["a", {"text": "a"}], V4, 10, texts)) == [first[0], first[0]]
    assert list(each_openai_item(["abcd"], PLUS, 10, texts)) == openai_items(["abcd"], PLUS, 10)
    with fails(InvalidRequest, "input[1]"):  # kept for a model that takes it, too long for this one
        list(each_openai_item(["abc", "abcd"], spec("text-embedding-v4", max_text_chars=3), 10, texts))
    with fails(InvalidRequest, "input[0]"):  # a model without texts
        list(each_openai_item(["a"], spec("text-embedding-3-small", modalities=frozenset({"image"})), 10, texts))


def test_the_texts_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(items_module, "MEMO_TEXTS", 2)
    texts = TextItems()
    long = "x" * (MEMO_TEXT_CHARS + 1)
    for i in range(10):
        items = list(each_openai_item([f"text {i}", long], PLUS, 10, texts))
        assert items == openai_items([f"text {i}", long], PLUS, 10)
        assert 0 < len(texts.recent) <= 2 and long not in texts.recent
        assert len(texts.retiring) <= 2 and long not in texts.retiring


@pytest.mark.parametrize(
    "text",
    [
        lambda i: f"{i:06d} " * (1 + i % 73),  # ASCII: a byte a character
        lambda i: f"é{i:06d}" * (1 + i % 64),  # Latin-1: a byte a character, two in UTF-8
        lambda i: f"{i:06d}" + "中" * (i % 506),  # two bytes a character, three in UTF-8
        lambda i: f"{i:06d}" + "\U0001f600" * (i % 506),  # astral: four bytes a character
        lambda i: f"{i:06d}" * (i % 85) + "\U0001f600",  # one astral character makes all of them four bytes
    ],
    ids=["ascii", "latin-1", "cjk", "astral", "one-astral"],
)
def test_what_texts_hold_is_within_what_they_count(text: Any) -> None:
    """text_bytes against tracemalloc, through the memo's fills and frees, each text also written by orjson as
    an upstream request does (a str that is not ASCII then keeps its UTF-8 too): within the count, but for the
    dicts' tables (docs/operations.md), and not far over it."""
    texts = TextItems()
    n = 2 * MEMO_TEXTS + MEMO_TEXTS // 2
    held = traced_and_counted(texts, lambda i: orjson.dumps(texts.item(text(i)).parts), n, 97)
    assert_counted(held, MEMO_TEXTS_BYTES, TABLES)
    assert texts.item(text(n - 1)) is texts.recent[text(n - 1)]  # served from the memo


def test_texts_too_long_to_be_kept_are_not_looked_up() -> None:
    """Looking a text up hashes all of it: one longer than MEMO_TEXT_CHARS, never kept, is not looked up."""
    looked: list[str] = []

    class Recent(dict[str, Item]):
        def get(self, key: str, default: Any = None) -> Any:
            looked.append(key)
            return super().get(key, default)

    texts = TextItems()
    texts.recent = Recent()
    long = "y" * (MEMO_TEXT_CHARS + 1)
    kept = "z" * MEMO_TEXT_CHARS
    for _ in range(2):
        assert list(each_openai_item([long, kept], PLUS, 10, texts)) == openai_items([long, kept], PLUS, 10)
    assert long not in looked and kept in looked and long not in texts.recent


def test_text_at_the_limit_passes_and_one_more_fails() -> None:
    assert openai_items(["x" * 4096], PLUS, 10)
    with fails(InvalidRequest, "input[0]"):
        openai_items(["x" * 4097], PLUS, 10)


def test_image_over_the_model_limit_is_413_naming_the_field() -> None:
    small = spec("tongyi-embedding-vision-plus", max_image_bytes=64)
    big = data_uri(png(list(range(256)) * 4))
    with pytest.raises(PayloadTooLarge) as info:
        openai_items(["a", {"image": big}], small, 10)
    assert info.value.status == 413 and info.value.param == "input[1].image"


def test_dashscope_contents_and_texts() -> None:
    items = dashscope_contents([{"text": "a"}, "b", {"image": PNG}], PLUS, 10)
    assert [it.modality for it in items] == ["text", "text", "image"]
    assert [it.parts for it in dashscope_texts("one", V4, 10)] == [{"text": "one"}]
    assert [it.parts for it in dashscope_texts(["a", "b"], V4, 10)] == [{"text": "a"}, {"text": "b"}]


@pytest.mark.parametrize(
    ("call", "param"),
    [
        (lambda: dashscope_contents([], PLUS, 10), "input.contents"),
        (lambda: dashscope_contents("a", PLUS, 10), "input.contents"),
        (lambda: dashscope_contents(["a"] * 11, PLUS, 10), "input.contents"),
        (lambda: dashscope_contents(["a", "b", {"video": "file:///etc/passwd"}], PLUS, 10), "input.contents[2].video"),
        (lambda: dashscope_contents(["a", [1, 2]], PLUS, 10), "input.contents[1]"),
        (lambda: dashscope_texts([], V4, 10), "input.texts"),
        (lambda: dashscope_texts(["a", 3], V4, 10), "input.texts[1]"),
        (lambda: dashscope_texts(["a", {"text": "b"}], V4, 10), "input.texts[1]"),
        (lambda: dashscope_texts({"texts": "a"}, V4, 10), "input.texts"),
    ],
)
def test_dashscope_errors_name_the_field(call: object, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        call()  # type: ignore[operator]
    assert info.value.param == param


def test_fuse_all_makes_one_item_over_every_content_in_order() -> None:
    items = openai_items(["a", {"image": URL}], QWEN, 10)
    fused = fuse_all(items, QWEN, "input")
    assert fused.modality == "fusion"
    assert fused.parts == {"contents": [{"text": "a"}, {"image": URL}]}
    assert fused.identity != fuse_all(list(reversed(items)), QWEN, "input").identity
    assert fused.est_tokens == sum(it.est_tokens for it in items)
    assert fuse_all(openai_items(["a"] * 20, QWEN, 100), QWEN, "input")
    with fails(InvalidRequest, "input.contents"):
        fuse_all(openai_items(["a"] * 21, QWEN, 100), QWEN, "input.contents")
