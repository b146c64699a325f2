"""Deployment: one upstream serving one model, as the fleet routes to it (fleet.py) and background calls
take its idle quota (idle.py): the type both share, so neither imports the other for it."""

from __future__ import annotations

from dataclasses import dataclass

from .adapter import Upstream
from .guard import Guard


@dataclass(slots=True)
class Deployment:
    """One upstream serving one model."""

    name: str  # the upstream's configured name: the `upstream` metric label
    upstream: Upstream
    guard: Guard
    identity: str
    account: str
    rpm: int | None
    tpm: int | None
    weight: float
    inflight: int = 0
    throttled_until: float = 0.0
