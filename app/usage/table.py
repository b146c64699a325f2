"""`embedding-gateway usage --since 30d --by team,model [--csv]`: the ledger summed over a period, read
from the limits Redis, as a table an operator can paste (or CSV)."""

from __future__ import annotations

import csv
import io
import re
import time
from decimal import Decimal

from ..redis.cause import RedisSetupError
from ..redis.link import Mode, connect
from .report import Query, Reader
from .rows import Keys
from .store import RedisLedger

GROUPS = {"team": "project_id", "key": "api_key_id", "model": "model"}
UNITS = {"m": 60, "h": 3600, "d": 86_400}
COLUMNS = ["requests", "items", "cache_hits", "tokens", "saved_tokens", "cost", "saved", "currency"]


def since_seconds(text: str) -> int:
    match = re.fullmatch(r"(\d{1,6})([mhd])", text)
    if match is None:
        raise ValueError("--since: a number and m, h or d (90m, 12h, 30d)")
    return int(match.group(1)) * UNITS[match.group(2)]


def groups(text: str) -> list[str]:
    names = [g.strip() for g in text.split(",") if g.strip()]
    wrong = [g for g in names if g not in GROUPS]
    if wrong or len(set(names)) != len(names):
        raise ValueError(f"--by: any of {', '.join(GROUPS)}, each once")
    return names


async def rows(
    url: str | None, mode: Mode, timeout_s: float, keys: Keys, since_s: int, by: list[str], now: float | None = None
) -> list[list[str]]:
    """One row per group and currency, summed over the hours from `since_s` ago to now, from the ledger in
    the limits' Redis at `url` (None: none configured)."""
    if url is None:
        raise RedisSetupError("no LIMITS_REDIS_URL or REDIS_URL: the ledger lives in each gateway process")
    link = await connect(url, timeout_s=timeout_s, max_connections=4, mode=mode)
    try:
        end = int(now if now is not None else time.time())
        start = end - since_s
        hours = (end - start // 3600 * 3600 + 3599) // 3600
        q = Query(start, end, "1h", hours, frozenset(), None, None, None)
        reader = Reader(RedisLedger(link), keys)
        buckets, _ = await reader.buckets(q, start // 3600 * 3600, [GROUPS[g] for g in by])
    finally:
        await link.close()
    totals: dict[tuple[str, ...], dict[str, int]] = {}
    for _, bucket in buckets:
        for k, row in bucket.items():
            into = totals.setdefault(k, {})
            for metric, n in row.items():
                into[metric] = into.get(metric, 0) + n
    out = []
    for k, row in sorted(totals.items()):
        counts = [str(row.get(m, 0)) for m in ("requests", "items", "hits", "tokens", "saved_tokens")]
        currencies = sorted({m.split(":", 1)[1] for m in row if ":" in m}) or [""]
        for cur in currencies:
            money = [exact(row.get(f"{kind}:{cur}", 0)) if cur else "" for kind in ("cost", "saved")]
            out.append([*k, *counts, *money, cur])
    return out


def exact(nanos: int) -> str:
    """Nanos as a decimal amount with all nine places: what the ledger holds, to the nano."""
    return f"{Decimal(nanos).scaleb(-9):f}"


def render(by: list[str], table: list[list[str]], as_csv: bool) -> str:
    header = [*by, *COLUMNS]
    if as_csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(table)
        return buf.getvalue()
    widths = [max(len(str(c)) for c in col) for col in zip(header, *table, strict=True)]
    lines = []
    for r in [header, *table]:
        cells = [c.ljust(w) if i < len(by) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
