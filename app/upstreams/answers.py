"""The checks every upstream answer passes before it is used or cached: count, unique indices, vector
length, finite values (`assemble`); base64 vectors decoded; billed tokens read from any usage shape."""

from __future__ import annotations

import binascii
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import UpstreamInvalid


def assemble(pairs: Iterable[tuple[Any, Any]], n: int, dim: int, upstream: str) -> np.ndarray:
    """(index, vector) pairs in any order -> rows in item order; count, indices, length, finite checked.

    A JSON list of numbers is packed by `struct` (about twice as fast as numpy's conversion of a list of
    Python floats: it is most of the gateway's own work on a miss); both round to the nearest float32."""
    rows: list[Any] = [None] * n
    seen = 0
    for index, vector in pairs:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n or rows[index] is not None:
            raise UpstreamInvalid(f"upstream {upstream} answered a missing, out-of-range or duplicate index")
        rows[index] = vector
        seen += 1
    if seen != n:
        raise UpstreamInvalid(f"upstream {upstream} answered {seen} vectors for {n} inputs")
    packer = struct.Struct(f"<{dim}f")
    out = bytearray()
    for row in rows:
        if isinstance(row, list):
            if len(row) != dim:
                raise UpstreamInvalid(f"upstream {upstream} answered vectors of the wrong length (expected {dim})")
            try:
                out += packer.pack(*row)
            except OverflowError:  # a number beyond float32
                raise UpstreamInvalid(f"upstream {upstream} answered non-finite values") from None
            except (struct.error, TypeError):
                raise UpstreamInvalid(f"upstream {upstream} answered vectors that are not lists of numbers") from None
        else:  # decoded base64, or the local model's rows
            try:
                with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
                    array = np.asarray(row, dtype="<f4")
            except (ValueError, TypeError):
                raise UpstreamInvalid(f"upstream {upstream} answered vectors that are not lists of numbers") from None
            if array.shape != (dim,):
                raise UpstreamInvalid(f"upstream {upstream} answered vectors of the wrong length (expected {dim})")
            out += array.tobytes()
    vectors = np.frombuffer(out, dtype="<f4").reshape(n, dim)
    if not np.isfinite(vectors).all():
        raise UpstreamInvalid(f"upstream {upstream} answered non-finite values")
    return vectors


def decode_base64_vector(value: str, dim: int, upstream: str) -> list[float] | np.ndarray:

    try:
        raw = binascii.a2b_base64(value, strict_mode=True)  # b64decode(validate=True) adds a regex pass
    except ValueError:
        raise UpstreamInvalid(f"upstream {upstream} answered invalid base64") from None
    if len(raw) != 4 * dim:
        raise UpstreamInvalid(f"upstream {upstream} answered vectors of the wrong length (expected {dim})")
    return np.frombuffer(raw, dtype="<f4")


def usage_tokens(usage: object) -> int:
    """Billed tokens from any of the usage shapes of upstream-contracts.md 1.2-1.3 and 2."""
    if not isinstance(usage, dict):
        return 0
    for key in ("total_tokens", "prompt_tokens"):
        v = usage.get(key)
        if isinstance(v, int) and v >= 0:
            return v
    return sum(v for k in ("input_tokens", "image_tokens") if isinstance(v := usage.get(k), int) and v >= 0)
