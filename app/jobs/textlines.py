"""The lines of a DashScope async text-embedding task (BatchTextEmbedding): the input is a text file, one
document per line (UTF-8); the result is one JSON line per document with its `text_index` (0-based, the
line's place among the documents), its embedding or its error. The result-line shape follows what users
of DashScope's own task parse (`output.text_index`, `output.embedding`): DashScope documents the file's
existence, not its lines."""

from __future__ import annotations

from typing import Any

import orjson

from ..config.catalog import ModelSpec
from ..errors import GatewayError, InvalidRequest
from ..inputs import items as parse_items
from ..inputs.params import Params
from .host import Host
from .lines import Line

ASYNC_MODELS = {"text-embedding-async-v1": "text-embedding-v1", "text-embedding-async-v2": "text-embedding-v2"}


def served_name(model: str) -> str:
    """DashScope's async model names are its sync models' vectors: the sync twin serves them."""
    return ASYNC_MODELS.get(model, model)


def parse_text(spec: ModelSpec, params: Params, max_bytes: int, n: int, raw: bytes | None) -> Line | bytes:
    index = n - 1
    if raw is None:
        return error(index, InvalidRequest(f"line {n}: longer than {max_bytes} bytes", param="input.url"))
    try:
        text = raw.decode("utf-8").rstrip("\r")
        items = parse_items.dashscope_texts([text], spec, 1)
    except UnicodeDecodeError:
        return error(index, InvalidRequest(f"line {n}: not UTF-8 text", param="input.url"))
    except GatewayError as err:
        return error(index, err)
    return Line(str(index), spec, params, items, False)


def ok(host: Host, line: Line, vectors: list[bytes], share: int) -> bytes:
    output: dict[str, Any] = {"code": 200, "message": "Success", "text_index": int(line.custom_id),
                              "embedding": host.floats.fragment(vectors[0])}  # fmt: skip
    return orjson.dumps({"output": output, "usage": {"total_tokens": share}}) + b"\n"


def error(index: int, err: GatewayError) -> bytes:
    output = {"code": err.dashscope_code, "message": err.message.replace("input.texts[0]", "input.url"),
              "text_index": index}  # fmt: skip
    return orjson.dumps({"output": output}) + b"\n"
