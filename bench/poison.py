"""Poison answers for the stand-in upstream: HTTP 200 answers that break the contract, one way each.

Control: `POST /_control {"poison": MODE}` (null: off). Every successful answer is then corrupted:
- wrong_length: the first vector one number short
- wrong_count: the last vector missing
- duplicate_index: the second row carries the first row's index (a one-row answer repeats its row)
- nan: the first number is written as NaN (what Python's json.dumps writes), which is not JSON
- invalid_json: the body cut in half
- error_200: an error body (the contract's error shape) with status 200
"""

from __future__ import annotations

from typing import Any

import orjson

POISON_MODES = ("wrong_length", "wrong_count", "duplicate_index", "nan", "invalid_json", "error_200")


def _rows(kind: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = payload["data"] if kind == "openai" else payload["output"]["embeddings"]
    return rows


def poisoned(mode: str, kind: str, payload: dict[str, Any]) -> bytes:
    """The answer `payload` (kind: openai, text or multimodal) corrupted by `mode`, as body bytes."""
    rows = _rows(kind, payload)
    position = "index" if kind != "text" else "text_index"
    if mode == "error_200":
        error = {"code": "InternalError", "message": "An internal error has occured, please try again later."}
        return orjson.dumps({"error": {**error, "type": "server_error"}} if kind == "openai" else error)
    if mode == "wrong_length":
        rows[0]["embedding"] = rows[0]["embedding"][:-1]
    elif mode == "wrong_count":
        rows.pop()
    elif mode == "duplicate_index":
        if len(rows) > 1:
            rows[1][position] = rows[0][position]
        else:
            rows.append(dict(rows[0]))
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    if mode == "nan":
        start = body.index(b'"embedding":[') + len(b'"embedding":[')
        end = min(i for i in (body.find(b",", start), body.find(b"]", start)) if i > 0)
        body = body[:start] + b"NaN" + body[end:]
    elif mode == "invalid_json":
        body = body[: len(body) // 2]
    return body
