"""The ledger's rows: what one request adds, where it lands in Redis (the keys and fields), and how a
stored field reads back.

Every key shares one hash tag (`{NS:usage}`, one Redis Cluster slot: a batch is one script call):
- `{NS:usage}:h:<hour start, unix s>`: a hash per UTC hour, kept `usage_retention_days` (400) after it;
- `{NS:usage}:m:<minute start>`: a hash per minute, kept a day (the 1m buckets of the API);
- `{NS:usage}:d:<day number>` and `{NS:usage}:mo:<YYYYMM>`: money billed per team and currency that day and
  month (what budgets compare with), kept two days past their end;
- `{NS:usage}:seq:<process id>`: the last batch of that process applied (never counted twice).
Hour and minute fields are `team|key id|metric|model` (team names and key ids hold no `|`; a model name
may, and comes last), metrics as in METRICS, money as `cost:CUR` and `saved:CUR` in nanos.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from functools import lru_cache

METRICS = ("requests", "items", "hits", "tokens", "saved_tokens")
MINUTE_KEEP_S = 86_400
SPEND_KEEP_S = 2 * 86_400
DAY_S = 86_400


@lru_cache(maxsize=1024)  # the hashes of the keys in use: one SHA-256 each, not one per request
def key_id(key_hash: str) -> str:
    """A key's short public id: derived from its stored hash (never from the key), 12 hex digits."""
    return "key_" + hashlib.sha256(key_hash.encode()).hexdigest()[:12]


@dataclass(slots=True)
class Usage:
    """One request's figures, as the ledger counts them (only requests answered with vectors)."""

    team: str
    key: str  # key id ('' when auth is off)
    model: str
    items: int
    hits: int
    tokens: int  # billed by the upstream (or the estimate of the misses when it reports none)
    saved_tokens: int  # the estimate of the items the cache served
    currency: str | None = None  # None: the model has no price; money stays 0
    cost: int = 0  # nanos
    saved: int = 0  # nanos

    def add_to(self, row: dict[str, int]) -> None:
        """Add this request's figures that are not 0 to a row of the ledger (by field: METRICS, then money)."""
        row["requests"] = row.get("requests", 0) + 1
        if self.items:
            row["items"] = row.get("items", 0) + self.items
        if self.hits:
            row["hits"] = row.get("hits", 0) + self.hits
        if self.tokens:
            row["tokens"] = row.get("tokens", 0) + self.tokens
        if self.saved_tokens:
            row["saved_tokens"] = row.get("saved_tokens", 0) + self.saved_tokens
        if self.currency is not None:
            if self.cost:
                name = f"cost:{self.currency}"
                row[name] = row.get(name, 0) + self.cost
            if self.saved:
                name = f"saved:{self.currency}"
                row[name] = row.get(name, 0) + self.saved


def month_of(day: int) -> int:
    """YYYYMM of a day number (days since 1970-01-01, UTC)."""
    d = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    return d.year * 100 + d.month


def month_end_s(month: int) -> int:
    y, m = divmod(month, 100)
    nxt = dt.datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=dt.UTC)
    return int(nxt.timestamp())


class Keys:
    def __init__(self, namespace: str, retention_days: int) -> None:
        self.tag = f"{{{namespace}:usage}}"
        self.retention_s = retention_days * DAY_S

    def hour(self, start: int) -> tuple[str, int]:
        return f"{self.tag}:h:{start}", start + 3600 + self.retention_s

    def minute(self, start: int) -> tuple[str, int]:
        return f"{self.tag}:m:{start}", start + 60 + MINUTE_KEEP_S

    def day(self, day: int) -> tuple[str, int]:
        return f"{self.tag}:d:{day}", (day + 1) * DAY_S + SPEND_KEEP_S

    def month(self, month: int) -> tuple[str, int]:
        return f"{self.tag}:mo:{month}", month_end_s(month) + SPEND_KEEP_S

    def seq(self, process: str) -> str:
        return f"{self.tag}:seq:{process}"


def field(team: str, key: str, metric: str, model: str) -> str:
    return f"{team}|{key}|{metric}|{model}"


def parse_field(raw: str) -> tuple[str, str, str, str] | None:
    parts = raw.split("|", 3)
    if len(parts) != 4:
        return None
    return parts[0], parts[1], parts[2], parts[3]
