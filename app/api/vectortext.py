"""VectorText: the JSON text of recently served vectors, as floats or as base64, so that a cache hit is not
re-encoded on every request.

Formatting 8 vectors of 1,024 float32 numbers as JSON takes about 150 us (orjson), encoding them as base64
about 25 us; pasting their prepared text into the answer (api/answer.py) takes a copy. The text
is keyed by the vector's own bytes (a bytes object caches its hash, and the hot cache hands out the same
objects), bounded by total size, least recently used first out. The output is byte for byte what
orjson writes for the array, or for the base64 string.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import orjson


def float_json(vector: bytes) -> bytes:
    return orjson.dumps(np.frombuffer(vector, dtype="<f4"), option=orjson.OPT_SERIALIZE_NUMPY)


FLOAT_RATIO = 3.25  # a float32 (4 bytes) as JSON: up to 12 characters and a comma
BASE64_RATIO = 1.34


def base64_json(vector: bytes) -> bytes:
    return b'"' + base64.b64encode(vector) + b'"'


class VectorText:
    def __init__(self, max_bytes: int, encode: Callable[[bytes], bytes], ratio: float) -> None:
        """`ratio`: the text's bytes per vector byte, at most (an estimate: answer.py sizes answers by it)."""
        self.max_bytes = max_bytes
        self.encode = encode
        self.ratio = ratio
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._sizes: dict[bytes, int] = {}
        self._bytes = 0

    def json(self, vector: bytes) -> bytes:
        """The vector's JSON text (an array of floats, or a base64 string)."""
        text = self._data.get(vector)
        if text is not None:
            self._data.move_to_end(vector)
            return text
        text = self.encode(vector)
        size = len(text) + len(vector)
        if size <= self.max_bytes:
            self._data[vector] = text
            self._sizes[vector] = size
            self._bytes += size
            while self._bytes > self.max_bytes:
                old, _ = self._data.popitem(last=False)
                self._bytes -= self._sizes.pop(old)
        return text

    def fragment(self, vector: bytes) -> orjson.Fragment:
        """The vector's JSON text, to be pasted by orjson where it goes."""
        return orjson.Fragment(self.json(vector))
