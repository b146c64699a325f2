"""Cache keys: stable across calls and processes, different whenever anything that decides the vector
differs, the same whenever the upstream would compute the same vector."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cache import keys as keys_module
from app.cache.keys import (
    KEY_VERSION,
    MEMO_IDENTITY_BYTES,
    MEMO_KEYS,
    MEMO_KEYS_BYTES,
    KeyMaker,
    KeyMemo,
    content_key,
)
from app.inputs.items import Item, content_item, openai_items
from app.inputs.params import Params
from tests.support.memory import assert_counted, traced_and_counted
from tests.support.samples import DATED, PLUS, V4, data_uri, png

ROOT = Path(__file__).resolve().parents[2]

texts = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")
option_values = st.one_of(st.booleans(), st.integers(-5, 5), st.sampled_from(["query", "document", "x"]))
options = st.dictionaries(st.sampled_from(["text_type", "instruct", "fps", "custom"]), option_values, max_size=3)
dims = st.sampled_from([64, 256, 512, 1024])


def key(item: Item, *, upstream: str = "dashscope", model: str = "m", dim: int = 512, **opts: Any) -> str:
    return content_key("eg", upstream, model, Params(dim, True, opts), item)


@given(texts, dims, options)
def test_stable_and_versioned(text: str, dim: int, opts: dict[str, Any]) -> None:
    item = content_item(text, V4, "p")
    k = key(item, dim=dim, **opts)
    assert k == key(item, dim=dim, **opts)
    assert k.startswith(f"eg:v{KEY_VERSION}:{{") and k.endswith("}")
    assert k == KeyMaker("eg", "dashscope", "m", Params(dim, True, opts)).keys([item, item])[1]


@given(st.lists(texts, min_size=1, max_size=12), dims, options)
def test_memo_gives_the_makers_keys(batch: list[str], dim: int, opts: dict[str, Any]) -> None:
    """A KeyMemo hands out exactly what each maker computes, first time and again, and keeps two makers'
    keys of one item apart."""
    memo = KeyMemo()
    items = [content_item(t, V4, "p") for t in batch]
    a = KeyMaker("eg", "dashscope", "m", Params(dim, True, opts))
    b = KeyMaker("eg", "dashscope", "m", Params(dim * 2, True, opts))
    for _ in range(2):
        assert memo.keys(a, items) == [a.key(it) for it in items]
        assert memo.keys(b, items) == [b.key(it) for it in items]


def test_memo_is_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(keys_module, "MEMO_KEYS", 4)
    memo, maker = KeyMemo(), KeyMaker("eg", "dashscope", "m", Params(512, True))
    items = [content_item(f"text {i}", V4, "p") for i in range(10)]
    assert memo.keys(maker, items) == [maker.key(it) for it in items]
    assert 0 < len(memo.recent) <= 4 and memo.entries <= 4
    long = content_item("x" * (MEMO_IDENTITY_BYTES + 1), V4, "p")
    memo = KeyMemo()
    assert memo.keys(maker, [long]) == [maker.key(long)]
    assert not memo.recent  # a long identity is hashed every time, not kept


def test_memo_is_bounded_by_bytes(monkeypatch: Any) -> None:
    monkeypatch.setattr(keys_module, "MEMO_KEYS_BYTES", 8192)
    memo, maker = KeyMemo(), KeyMaker("eg", "dashscope", "m", Params(512, True))
    for i in range(100):
        item = content_item(f"text {i} " + "y" * (i * 5), V4, "p")
        assert memo.keys(maker, [item]) == [maker.key(item)]
        assert memo.recent[maker, item.identity] == maker.key(item)
        assert 0 < memo.held_bytes <= 8192


def test_what_keys_hold_is_within_what_they_count() -> None:
    """The memo's count against tracemalloc, its items dropped (their identities then held by the memo alone),
    through fills and frees: within the count, but for the dicts' tables (docs/operations.md) and the (maker,
    identity) tuples freed into CPython's free list of pairs (at most 2,000 of 56 bytes, kept for any pair)."""
    memo, maker = KeyMemo(), KeyMaker("eg", "dashscope", "m", Params(512, True))

    def add(i: int) -> None:
        memo.keys(maker, [content_item(f"{i:06d}" + "z" * (i % 506), V4, "p")])

    held = traced_and_counted(memo, add, 2 * MEMO_KEYS + MEMO_KEYS // 2, 199)
    assert_counted(held, MEMO_KEYS_BYTES, 48 * MEMO_KEYS + 2000 * 56)


@given(texts, dims, options)
def test_any_change_changes_the_key(text: str, dim: int, opts: dict[str, Any]) -> None:
    item = content_item(text, V4, "p")
    k = key(item, dim=dim, **opts)
    assert k != key(item, upstream="openai", dim=dim, **opts)
    assert k != key(item, model="m2", dim=dim, **opts)
    assert k != key(item, dim=dim * 2, **opts)
    assert k != key(item, dim=dim, **{**opts, "extra": 1})
    for name, value in opts.items():
        assert k != key(item, dim=dim, **{**opts, name: f"other-{value}"})
    assert k != key(content_item(text + "!", V4, "p"), dim=dim, **opts)
    assert k != content_key("other", "dashscope", "m", Params(dim, True, opts), item)


@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 3), min_size=2))
def test_option_order_does_not_matter(opts: dict[str, Any]) -> None:
    item = content_item("x", V4, "p")
    assert key(item, **opts) == key(item, **dict(reversed(list(opts.items()))))


def test_object_options_are_keyed_by_value_not_by_key_order() -> None:
    item = content_item("x", V4, "p")
    a = key(item, kwargs={"text_type": "document", "extra": [1, {"p": 1, "q": 2}]})
    assert a == key(item, kwargs={"extra": [1, {"q": 2, "p": 1}], "text_type": "document"})
    assert a != key(item, kwargs={"text_type": "query", "extra": [1, {"p": 1, "q": 2}]})
    assert a != key(item, kwargs={"text_type": "document", "extra": [{"p": 1, "q": 2}, 1]})  # list order counts
    assert a != key(item)


def test_existing_keys_did_not_change() -> None:
    """Sorting object keys in the key's head changes nothing for options that are not objects (the head had
    none before): every key already in a cache still matches."""
    item = content_item("hello", V4, "p")
    assert key(item, text_type="query") == f"eg:v{KEY_VERSION}:{{" + _old_key(item, {"text_type": "query"}) + "}"


def _old_key(item: Item, opts: dict[str, Any]) -> str:
    head = [KEY_VERSION, "dashscope", "m", 512, sorted(opts.items())]
    h = hashlib.blake2b(orjson.dumps(head), digest_size=20)
    h.update(item.modality.encode() + b"\0" + item.identity)
    return h.hexdigest()


def test_sending_the_default_dimension_or_not_is_the_same_vector() -> None:
    item = content_item("x", V4, "p")
    assert content_key("eg", "u", "m", Params(1024, True), item) == content_key(
        "eg", "u", "m", Params(1024, False), item
    )


def test_a_string_and_a_text_object_share_a_key() -> None:
    assert key(content_item("x", PLUS, "p")) == key(content_item({"text": "x"}, PLUS, "input[4]"))
    assert key(openai_items("x", PLUS, 5)[0]) == key(openai_items([{"text": "x"}], PLUS, 5)[0])


def test_modality_is_in_the_key() -> None:
    url = "https://example.com/x"
    image = content_item({"image": url}, PLUS, "p")
    video = content_item({"video": url}, PLUS, "p")
    text = content_item(url, PLUS, "p")
    multi = content_item({"multi_images": [url]}, PLUS, "p")
    assert len({key(image), key(video), key(text), key(multi)}) == 4


@given(st.binary(min_size=1, max_size=30), st.binary(min_size=1, max_size=30))
@settings(max_examples=50)
def test_same_image_bytes_same_key_whatever_the_uri(a: bytes, b: bytes) -> None:
    one = png(list(a))
    k1 = key(content_item({"image": data_uri(one)}, PLUS, "p"))
    assert k1 == key(content_item({"image": data_uri(one, "image/PNG")}, PLUS, "p"))
    assert k1 == key(content_item({"image": data_uri(one, "image/x-unknown")}, PLUS, "p"))
    assert (k1 == key(content_item({"image": data_uri(png(list(b)))}, PLUS, "p"))) == (a == b)
    assert k1 != key(content_item({"image": "https://example.com/a.png"}, PLUS, "p"))


KEY_SCRIPT = """
from app.inputs.items import content_item
from app.cache.keys import content_key
from app.inputs.params import Params
from tests.support.samples import DATED
print(content_key("eg", "dashscope", "m", Params(512, True, {"fps": 0.5, "instruct": "i"}),
                  content_item({"text": "same in every process", "image": "https://e.com/a.png"}, DATED, "p")))
"""


def test_stable_across_processes_with_different_hash_seeds() -> None:
    item = content_item({"text": "same in every process", "image": "https://e.com/a.png"}, DATED, "p")
    here = content_key("eg", "dashscope", "m", Params(512, True, {"fps": 0.5, "instruct": "i"}), item)
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", KEY_SCRIPT],
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == here
