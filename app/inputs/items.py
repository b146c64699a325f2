"""The internal Item: one input that yields one vector, parsed from either wire shape and checked
against its model's limits before anything is sent upstream.

`parts` is the DashScope content object the item stands for ({"text": ...}, {"image": ...}, several keys for
a fused item, {"tokens": [...]} for OpenAI token ids to an upstream that takes them, {"contents": [...]} for
a qwen3-vl enable_fusion request); each upstream adapter maps it to its own wire. `identity` is what the
cache key hashes: the text, the URL string, or the SHA-256 of decoded media bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from sys import getsizeof
from typing import Any

import orjson

from ..config.catalog import ModelSpec
from ..errors import InvalidRequest
from ..runtime.memo import Memo, MemoGauges
from ..runtime.slices import SLICE
from . import tokentext
from .media.checks import check_image, check_video

MEDIA_KEYS = ("text", "image", "video", "multi_images")
OBJECT_KEYS = frozenset((*MEDIA_KEYS, "factor"))
TOKENS_PER_IMAGE = 1024
TOKENS_PER_VIDEO = 4096
MEMO_TEXTS = 4096  # texts whose items a TextItems keeps (then it starts again empty)
MEMO_TEXTS_BYTES = 4 << 20  # what they hold in all, at most (docs/operations.md: memory per worker)
MEMO_TEXT_CHARS = 512  # longer texts are made into items every time, and not looked up (their hash costs)
MEMO_TEXT_BYTES = 8 << 10  # the most one text's entry holds, else not kept (512 astral characters: ~6.6 KB)
TEXT_ENTRY_BYTES = 400  # an Item, its parts dict, their slots (273 measured), the bytes' and str's headers (33, 49)


@dataclass(slots=True)  # not frozen: a frozen dataclass is ~3x slower to make, and a request makes many
class Item:
    """Never changed once made: the items of recent texts are shared by the requests that send them
    (TextItems)."""

    modality: str
    parts: dict[str, Any]
    identity: bytes
    est_tokens: int


class TextItems(Memo[str, Item]):
    """The items of recent texts: a text sent again (a cache hit, mostly) costs one dict lookup instead of an
    Item, its parts dict and its identity's encoding (~0.3 us a text); the identity's bytes being the same
    object, their hash is computed once (cache/keys.py's KeyMemo looks keys up by it). Correct without
    invalidation: a text item is a pure function of its text (the model's checks run on every request).
    Bounded (runtime/memo.py): MEMO_TEXTS texts, MEMO_TEXTS_BYTES in all (`text_bytes`); texts over
    MEMO_TEXT_CHARS characters are neither kept nor looked up."""

    __slots__ = ()

    def __init__(self, gauges: MemoGauges | None = None) -> None:
        super().__init__(
            max_entries=MEMO_TEXTS, max_bytes=MEMO_TEXTS_BYTES, max_entry_bytes=MEMO_TEXT_BYTES, gauges=gauges
        )

    def item(self, text: str) -> Item:
        if len(text) > MEMO_TEXT_CHARS:
            return _text_item(text)
        item = self.recent.get(text)
        if item is None:
            item = _text_item(text)
            self.put(text, item, text_bytes(text, item.identity))
        return item


def text_bytes(text: str, identity: bytes) -> int:
    """What a TextItems entry holds: the identity's bytes, the text (shared by key and parts: as many bytes
    when ASCII, else up to four a character, and its UTF-8 copy once orjson has written it, which CPython
    keeps in the str: an upstream request does), and the Item, its parts dict, their slots and the objects'
    headers (TEXT_ENTRY_BYTES). tests/unit/test_items.py checks it against tracemalloc."""
    if text.isascii():  # getsizeof costs ~0.1 us a call: the common case is counted without it
        return 2 * len(identity) + TEXT_ENTRY_BYTES
    return getsizeof(text) + 2 * len(identity) + TEXT_ENTRY_BYTES


def _text(value: object, spec: ModelSpec, param: str) -> str:
    if isinstance(value, str) and 0 < len(value) <= spec.max_text_chars and not value.isspace():
        return value  # the common case, decided in one expression
    if not isinstance(value, str):
        raise InvalidRequest(f"{param}: must be a string", param=param)
    if not value.strip():
        raise InvalidRequest(f"{param}: must not be empty", param=param)
    raise InvalidRequest(
        f"{param}: text of {len(value)} characters is longer than {spec.max_text_chars} for {spec.name}",
        param=param,
    )


def _require(spec: ModelSpec, modality: str, param: str) -> None:
    if modality not in spec.modalities:
        accepted = ", ".join(sorted(spec.modalities))
        raise InvalidRequest(f"{param}: model {spec.name} does not accept {modality} (accepts {accepted})", param=param)


def text_item(value: object, spec: ModelSpec, param: str) -> Item:
    return _text_item(_text(value, spec, param))


def _text_item(text: str) -> Item:
    return Item("text", {"text": text}, b"t\0" + text.encode(), max(1, len(text) // 3))


def token_item(value: list[Any], spec: ModelSpec, param: str) -> Item:
    """OpenAI token ids: forwarded as they are to an upstream that takes them, else decoded back to the text
    they encode (tokentext.py) and served as that text: the same item, key and checks as the text itself."""
    if not value:
        raise InvalidRequest(f"{param}: token list must not be empty", param=param)
    # A token stands for about four characters of text; decoded, at least a quarter of a character (a byte).
    limit = max(1, spec.max_text_chars // 4) if spec.token_ids else 4 * spec.max_text_chars
    if len(value) > limit:
        raise InvalidRequest(f"{param}: {len(value)} token ids is more than {limit} for {spec.name}", param=param)
    if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**31 for t in value):
        raise InvalidRequest(f"{param}: token ids must be integers in 0..2^31-1", param=param)
    if not spec.token_ids:
        _require(spec, "text", param)
        return text_item(tokentext.decode(value, spec.name, param), spec, param)
    return Item("tokens", {"tokens": value}, b"k\0" + orjson.dumps(value), len(value))


def object_item(obj: dict[str, Any], spec: ModelSpec, param: str) -> Item:
    unknown = sorted(set(obj) - OBJECT_KEYS)
    if unknown:
        raise InvalidRequest(
            f"{param}.{unknown[0]}: unknown key (expected one of {', '.join(MEDIA_KEYS)})",
            param=f"{param}.{unknown[0]}",
        )
    present = [k for k in MEDIA_KEYS if k in obj]
    if present == ["text"] and "factor" not in obj:
        _require(spec, "text", f"{param}.text")
        return text_item(obj["text"], spec, f"{param}.text")
    if not present:
        raise InvalidRequest(f"{param}: object needs one of {', '.join(MEDIA_KEYS)}", param=param)
    if len(present) > 1 and not spec.fused_objects:
        raise InvalidRequest(
            f"{param}: model {spec.name} takes one of {', '.join(present)} per object (no fused items)",
            param=param,
        )
    parts: dict[str, Any] = {}
    identity: list[Any] = []
    tokens = 0
    for key in present:
        where = f"{param}.{key}"
        _require(spec, key, where)
        value = obj[key]
        if key == "text":
            parts[key] = _text(value, spec, where)
            identity.append(["text", parts[key]])
            tokens += max(1, len(parts[key]) // 3)
        elif key == "image":
            media = check_image(value, where, max_bytes=spec.max_image_bytes, formats=spec.image_formats)
            parts[key] = media.wire
            identity.append(["image", media.identity])
            tokens += TOKENS_PER_IMAGE
        elif key == "video":
            media = check_video(value, where)
            parts[key] = media.wire
            identity.append(["video", media.identity])
            tokens += TOKENS_PER_VIDEO
        else:
            images = _multi_images(value, spec, where)
            parts[key] = [m.wire for m in images]
            identity.append(["multi_images", [m.identity for m in images]])
            tokens += TOKENS_PER_IMAGE * len(images)
    if "factor" in obj:
        factor = obj["factor"]
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not 0 <= factor <= 1e6:
            raise InvalidRequest(f"{param}.factor: must be a non-negative number", param=f"{param}.factor")
        parts["factor"] = factor
        identity.append(["factor", factor])
    modality = present[0] if len(present) == 1 else "fused"
    return Item(modality, parts, orjson.dumps(identity), tokens)


def _multi_images(value: object, spec: ModelSpec, param: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"{param}: must be a non-empty list of images", param=param)
    if len(value) > spec.max_multi_images:
        raise InvalidRequest(f"{param}: at most {spec.max_multi_images} images for {spec.name}", param=param)
    return [
        check_image(v, f"{param}[{i}]", max_bytes=spec.max_image_bytes, formats=spec.image_formats)
        for i, v in enumerate(value)
    ]


def content_item(value: object, spec: ModelSpec, param: str) -> Item:
    """One DashScope content or one OpenAI input element: a string, or an object."""
    if isinstance(value, str):
        _require(spec, "text", param)
        return text_item(value, spec, param)
    if isinstance(value, dict):
        return object_item(value, spec, param)
    raise InvalidRequest(f"{param}: must be a string or an object with one of {', '.join(MEDIA_KEYS)}", param=param)


def _check_count(n: int, limit: int, param: str) -> None:
    if n == 0:
        raise InvalidRequest(f"{param}: must not be empty", param=param)
    if n > limit:
        raise InvalidRequest(f"{param}: {n} items is more than the {limit} allowed per request", param=param)


def openai_items(raw: object, spec: ModelSpec, limit: int) -> list[Item]:
    """OpenAI `input`: a string, a list of strings/objects, a token list, or a list of token lists."""
    return list(each_openai_item(raw, spec, limit))


def each_openai_item(raw: object, spec: ModelSpec, limit: int, texts: TextItems | None = None) -> Iterable[Item]:
    """openai_items one item at a time (runtime/slices.py parses a large request in slices); a list of up to
    SLICE plain texts (the common request) at once, their items from `texts` when given."""
    if type(raw) is list and 0 < len(raw) <= min(limit, SLICE) and "text" in spec.modalities:
        items = _plain_texts(raw, spec.max_text_chars, texts)
        if items is not None:
            return items
    return _each_openai_item(raw, spec, limit)


def _plain_texts(raw: list[Any], longest: int, texts: TextItems | None) -> list[Item] | None:
    """The items of a list of plain texts (each a non-blank string of at most `longest` characters), or None
    as soon as one is not."""
    make, recent = (_text_item, {}) if texts is None else (texts.item, texts.recent)
    out = []
    for value in raw:
        if type(value) is not str or not 0 < (n := len(value)) <= longest or value.isspace():
            return None
        # A text too long to be kept is not looked up: the lookup would hash all of it (~1 us per 1,000
        # characters) for nothing.
        out.append((n <= MEMO_TEXT_CHARS and recent.get(value)) or make(value))
    return out


def _each_openai_item(raw: object, spec: ModelSpec, limit: int) -> Iterator[Item]:
    if isinstance(raw, str):
        yield content_item(raw, spec, "input")
        return
    if not isinstance(raw, list):
        raise InvalidRequest("input: must be a string or a list", param="input")
    _check_count(len(raw), limit, "input")
    if all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
        yield token_item(raw, spec, "input")
        return
    texts, longest = "text" in spec.modalities, spec.max_text_chars
    for i, value in enumerate(raw):
        if texts and type(value) is str and 0 < len(value) <= longest and not value.isspace():
            yield _text_item(value)  # the common case, as content_item makes it, without naming its place
            continue
        param = f"input[{i}]"
        yield token_item(value, spec, param) if isinstance(value, list) else content_item(value, spec, param)


def dashscope_contents(raw: object, spec: ModelSpec, limit: int) -> list[Item]:
    return list(each_dashscope_content(raw, spec, limit))


def each_dashscope_content(raw: object, spec: ModelSpec, limit: int) -> Iterator[Item]:
    if not isinstance(raw, list):
        raise InvalidRequest("input.contents: must be a list", param="input.contents")
    _check_count(len(raw), limit, "input.contents")
    return (content_item(v, spec, f"input.contents[{i}]") for i, v in enumerate(raw))


def dashscope_texts(raw: object, spec: ModelSpec, limit: int) -> list[Item]:
    return list(each_dashscope_text(raw, spec, limit))


def each_dashscope_text(raw: object, spec: ModelSpec, limit: int) -> Iterator[Item]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise InvalidRequest("input.texts: must be a string or a list of strings", param="input.texts")
    _check_count(len(raw), limit, "input.texts")
    return (text_item(v, spec, f"input.texts[{i}]") for i, v in enumerate(raw))


def fuse_all(items: list[Item], spec: ModelSpec, param: str) -> Item:
    """qwen3-vl `enable_fusion`: every content of the request becomes one vector, so they all go in one
    upstream call: more than the model's batch limit is refused here rather than by the upstream."""
    if len(items) > spec.max_batch:
        raise InvalidRequest(
            f"{param}: enable_fusion takes at most {spec.max_batch} contents for {spec.name}", param=param
        )
    identity = b"f\0" + orjson.dumps([[it.modality, it.identity.decode()] for it in items])
    return Item("fusion", {"contents": [it.parts for it in items]}, identity, sum(it.est_tokens for it in items))
