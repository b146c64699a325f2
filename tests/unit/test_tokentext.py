"""Token ids decoded back to text (issue 15): the encoding comes from a package, is tiktoken's own cl100k_base,
and turns every id sequence a tiktoken client sends back into its exact text; anything else is a 400 naming
the item."""

from __future__ import annotations

import hashlib

import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public

from app.cache.keys import KeyMaker
from app.errors import InvalidRequest
from app.inputs import tokentext
from app.inputs.items import openai_items, text_item
from app.inputs.params import Params
from tests.support.samples import SMALL, V4, spec
from tests.support.tiktokencache import offline_cache, shipped_file, source_of

TEXTS = [
    "hello world",
    "ümlauts, 你好, emoji 🚲🚲 and a\ttab\nnew line",
    "  leading and trailing spaces  ",
    "<|endoftext|> is text here",
    "x" * 5000,
]


def test_the_shipped_file_is_tiktokens_cl100k_base() -> None:
    _, sha256 = source_of("cl100k_base")
    assert hashlib.sha256(shipped_file().read_bytes()).hexdigest() == sha256


def test_the_gateways_encoding_is_the_one_clients_use(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # What a client gets from tiktoken.get_encoding("cl100k_base"), loaded from the same file with no network.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(offline_cache(tmp_path)))
    client = tiktoken.Encoding(**openai_public.cl100k_base())
    ours = tokentext.encoding("cl100k_base")
    assert ours is not None and ours.n_vocab == client.n_vocab
    assert ours._special_tokens == client._special_tokens and ours._pat_str == client._pat_str
    for text in TEXTS:
        ids = client.encode_ordinary(text)
        assert ours.encode_ordinary(text) == ids
        assert tokentext.decode(ids, "text-embedding-v4", "input") == text


def test_the_models_own_encoding_else_cl100k_base() -> None:
    assert tokentext.encoding_name("text-embedding-3-small") == "cl100k_base"
    assert tokentext.encoding_name("text-embedding-v4") == "cl100k_base"  # unknown to tiktoken
    assert tokentext.encoding_name("gpt-4o") == "o200k_base"
    with pytest.raises(InvalidRequest) as err:
        tokentext.decode([1, 2, 3], "gpt-4o", "input[1]")
    assert err.value.param == "input[1]" and "o200k_base" in err.value.message


@pytest.mark.parametrize(
    ("ids", "why"),
    [
        ([15339, 100256], "100256 is not a token id"),  # a gap between the ordinary and the special tokens
        ([15339, 100300], "100300 is not a token id"),
        ([15339, 2**31 - 1], "is not a token id"),
        ([57668, 53901, 11410, 248], "not decode to valid UTF-8"),  # the emoji's last byte is missing
    ],
)
def test_what_does_not_decode_is_a_400_naming_the_item(ids: list[int], why: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        tokentext.decode(ids, "text-embedding-v4", "input[2]")
    assert err.value.status == 400 and err.value.param == "input[2]"
    assert err.value.message.startswith("input[2]: ") and why in err.value.message


def _ids(text: str) -> list[int]:
    enc = tokentext.encoding("cl100k_base")
    assert enc is not None
    return enc.encode_ordinary(text)


def test_token_ids_become_the_text_itself_with_the_same_cache_key() -> None:
    texts = ["first document", "second, with ünïcode"]
    items = openai_items([_ids(t) for t in texts], V4, 2048)
    want = [text_item(t, V4, "input") for t in texts]
    assert [(it.modality, it.parts, it.identity) for it in items] == [(w.modality, w.parts, w.identity) for w in want]
    keys = KeyMaker("eg", "dashscope", V4.upstream_model, Params(1024, False))
    assert keys.keys(items) == keys.keys(want)
    (one,) = openai_items(_ids("a single list of ints"), V4, 2048)
    assert one.parts == {"text": "a single list of ints"}


def test_token_ids_stay_token_ids_for_an_upstream_that_takes_them() -> None:
    ids = _ids("kept as ids")
    (item,) = openai_items([ids], SMALL, 2048)
    assert item.modality == "tokens" and item.parts == {"tokens": ids}


def test_decoded_text_meets_the_same_limits_as_text() -> None:
    short = spec("text-embedding-v4", max_text_chars=10)
    with pytest.raises(InvalidRequest) as err:
        openai_items(["ok", _ids("far longer than ten characters")], short, 2048)
    assert err.value.param == "input[1]" and "longer than 10" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        openai_items([_ids("   ")], V4, 2048)
    assert err.value.param == "input[0]" and "must not be empty" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        openai_items([[]], V4, 2048)
    assert err.value.param == "input[0]"
    with pytest.raises(InvalidRequest) as err:
        openai_items([[1, True]], V4, 2048)
    assert err.value.param == "input[0]"
