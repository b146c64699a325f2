"""Host: what the jobs take from the gateway that runs them (runtime/state.py's Gateway is one), named here
so that the jobs, which the Gateway holds, do not import the Gateway back."""

from __future__ import annotations

from typing import Protocol

from ..api.vectortext import VectorText
from ..config.catalog import Catalog
from ..inputs.media.fetcher import Fetcher
from ..runtime.budget import MemoryBudget
from ..service import EmbeddingService
from ..teams.keys import Authenticator


class ItemCap(Protocol):
    @property
    def max_input_items(self) -> int: ...


class Host(Protocol):
    """The service the jobs feed, the models and upstreams it serves, the teams (a job runs as its team), the
    caps and the fetcher of a request, the memory budget its fetched media come from, the vectors' JSON text."""

    @property
    def service(self) -> EmbeddingService: ...
    @property
    def catalog(self) -> Catalog: ...
    @property
    def auth(self) -> Authenticator: ...
    @property
    def upstream_kinds(self) -> dict[str, str]: ...
    @property
    def caps(self) -> ItemCap: ...
    @property
    def fetcher(self) -> Fetcher | None: ...
    @property
    def memory(self) -> MemoryBudget: ...
    @property
    def floats(self) -> VectorText: ...
    @property
    def base64s(self) -> VectorText: ...
