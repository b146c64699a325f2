"""The usage ledger's parts, put together once per worker (by the Gateway the lifespan builds: runtime/state.py)."""

from __future__ import annotations

import logging

from ..config.catalog import Catalog
from ..metrics import Metrics
from ..redis.link import RedisLink
from ..service import EmbeddingService
from ..teams.keys import Authenticator
from .ledger import Ledger
from .meter import Meter, currencies
from .report import Reader
from .rows import Keys
from .store import LedgerStore, MemoryLedger, RedisLedger

log = logging.getLogger("embedding_gateway.usage")


def open_usage(
    keys: Keys, flush_s: float, catalog: Catalog, metrics: Metrics, auth: Authenticator, link: RedisLink | None,
    service: EmbeddingService,
) -> tuple[Meter, Reader]:  # fmt: skip
    """The ledger (its rows under `keys`, written every `flush_s`) in the limits Redis (every replica's;
    noeviction), or in this process without one, billed by the service; its batches start at once. The
    service's close writes the last batch (before the link closes)."""
    store: LedgerStore = MemoryLedger() if link is None else RedisLedger(link)
    ledger = Ledger(store, keys, flush_s=flush_s)
    meter = Meter(ledger, metrics, lambda: auth.teams, currencies(catalog))
    service.billing = meter
    ledger.start()
    priced = currencies(catalog)
    for name, team in auth.teams.items():
        if team.budget is not None and not ({team.budget.currency} & priced if team.budget.currency else priced):
            log.warning("teams.%s.budget counts nothing: no served model is priced in its currency", name)
    return meter, Reader(store, keys)
