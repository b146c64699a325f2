"""The adapter contract: the batch an upstream adapter is given, the result it returns, and the protocol
every adapter (dashscope.py, openai.py, local.py) follows. What adapters share besides: the answer checks
(answers.py), the one HTTP send (post.py) and the map from HTTP failures to gateway errors (failures.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..config.catalog import ModelSpec
from ..inputs.items import Item
from ..inputs.params import Params


@dataclass(frozen=True, slots=True)
class Batch:
    spec: ModelSpec
    params: Params
    items: Sequence[Item]
    owner: int = 0  # the request the call is for: its turn at the upstream's slots (slots.py)


@dataclass(frozen=True, slots=True)
class Result:
    vectors: np.ndarray  # (len(items), dimension), float32, rows in item order
    billed_tokens: int
    identity: str = ""  # the cache identity of the deployment that computed it (set by the fleet)


class Upstream(Protocol):
    name: str
    kind: str

    async def embed(self, batch: Batch) -> Result: ...

    async def close(self) -> None: ...
