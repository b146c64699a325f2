"""The ledger read back in the shapes of OpenAI's Usage and Costs APIs (field-notes.md "Usage, costs,
budgets"): time buckets of 1m, 1h or 1d aligned on UTC, results grouped by project (team), API key id and
model, filters, pagination by an opaque cursor. The cache's figures are extra fields of each result.

A bucket of 1d or 1h sums the hour hashes (kept `usage_retention_days`); a 1m bucket reads the minute
hashes (kept a day). Only rows written by a batch are seen: a process's last second may still be in its
memory (ledger.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InvalidRequest
from .prices import amount
from .rows import METRICS, Keys, parse_field
from .store import LedgerStore

WIDTHS = {"1m": 60, "1h": 3600, "1d": 86_400}
# Hashes read and folded into the page's totals at a time. A page may span 4,320 hour hashes (180 days), each
# holding every team's fields: read at once, 10 teams' worth held 436 MB and parsed for 3.8 s in one turn of
# the event loop; a slice of 48 holds a hundredth of that and the loop serves others between slices.
READ_SLICE = 48
LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}  # (default, max) buckets per page, as OpenAI
COST_LIMITS = {"1h": (24, 168), "1d": (7, 180)}
USAGE_GROUPS = {"project_id", "api_key_id", "model"}
COST_GROUPS = {"project_id", "line_item"}


@dataclass(frozen=True, slots=True)
class Query:
    start: int
    end: int
    width: str
    limit: int
    group_by: frozenset[str]
    teams: frozenset[str] | None  # None: every team
    keys: frozenset[str] | None
    models: frozenset[str] | None


def parse_query(
    params: dict[str, list[str]], *, now: int, costs: bool = False, default_width: str = "1d"
) -> tuple[Query, int]:
    """The query and the first bucket of this page (from `page`); 400 naming the parameter when wrong."""
    limits, groups = (COST_LIMITS, COST_GROUPS) if costs else (LIMITS, USAGE_GROUPS)
    width = _one(params, "bucket_width") or default_width
    if width not in limits:
        raise InvalidRequest(f"bucket_width: one of {', '.join(limits)}", param="bucket_width")
    start = _int(params, "start_time", None)
    end = _int(params, "end_time", now)
    if end <= start:
        raise InvalidRequest("end_time: must be after start_time", param="end_time")
    default, most = limits[width]
    limit = _int(params, "limit", default)
    if not 1 <= limit <= most:
        raise InvalidRequest(f"limit: 1..{most} buckets of {width}", param="limit")
    group_by = frozenset(_many(params, "group_by"))
    if group_by - groups:
        raise InvalidRequest(f"group_by: any of {', '.join(sorted(groups))}", param="group_by")
    size = WIDTHS[width]
    first = start // size * size
    page = _one(params, "page")
    if page is not None:
        if not page.startswith("page_") or not page[5:].isdigit() or not first <= int(page[5:]) < end:
            raise InvalidRequest("page: the next_page of an earlier answer", param="page")
        first = int(page[5:])
    q = Query(start, end, width, limit, group_by, _set(params, "project_ids"), _set(params, "api_key_ids"),
              _set(params, "models"))  # fmt: skip
    return q, first


def _many(params: dict[str, list[str]], name: str) -> list[str]:
    values = params.get(name, []) + params.get(name + "[]", [])
    return [v for value in values for v in value.split(",") if v]


def _set(params: dict[str, list[str]], name: str) -> frozenset[str] | None:
    values = _many(params, name)
    return frozenset(values) if values else None


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _int(params: dict[str, list[str]], name: str, default: int | None) -> int:
    raw = _one(params, name)
    if raw is None:
        if default is None:
            raise InvalidRequest(f"{name}: required (unix seconds)", param=name)
        return default
    if not raw.isdigit() or len(raw) > 12:
        raise InvalidRequest(f"{name}: a non-negative integer", param=name)
    return int(raw)


Totals = dict[tuple[str, ...], dict[str, int]]


class Reader:
    def __init__(self, store: LedgerStore, keys: Keys) -> None:
        self.store = store
        self.keys = keys

    async def buckets(self, q: Query, first: int, group: Iterable[str]) -> tuple[list[tuple[int, Totals]], int | None]:
        """This page's buckets from `first`, each with its totals per group; and the next page's first bucket."""
        size = WIDTHS[q.width]
        starts = list(range(first, min(q.end, first + q.limit * size), size))  # this page only: bounded
        nxt = first + q.limit * size if first + q.limit * size < q.end else None
        step = 60 if q.width == "1m" else 3600
        names = [
            (self.keys.minute(t) if step == 60 else self.keys.hour(t))[0]
            for s in starts
            for t in range(s, s + size, step)
        ]
        group = tuple(group)
        out: list[tuple[int, Totals]] = [(s, {}) for s in starts]
        per = size // step
        for low in range(0, len(names), READ_SLICE):
            if low:
                await asyncio.sleep(0)  # the in-process ledger's read never waits
            for i, stored in enumerate(await self.store.read(names[low : low + READ_SLICE]), low):
                self._add(out[i // per][1], stored, q, group)
        return out, nxt

    @staticmethod
    def _add(totals: Totals, stored: dict[str, int], q: Query, group: tuple[str, ...]) -> None:
        for raw, n in stored.items():
            parsed = parse_field(raw)
            if parsed is None:
                continue
            team, key, metric, model = parsed
            if (q.teams is not None and team not in q.teams) or (q.keys is not None and key not in q.keys):
                continue
            if q.models is not None and model not in q.models:
                continue
            values = {"project_id": team, "api_key_id": key, "model": model, "line_item": model}
            k = tuple(values[g] for g in group)
            row = totals.setdefault(k, {})
            row[metric] = row.get(metric, 0) + n


def usage_page(q: Query, buckets: list[tuple[int, Totals]], nxt: int | None) -> dict[str, object]:
    group = [g for g in ("project_id", "api_key_id", "model") if g in q.group_by]
    data = []
    for start, totals in buckets:
        results: list[dict[str, object]] = []
        for k, row in sorted(totals.items()):
            if not row.get("requests"):
                continue
            by = dict(zip(group, k, strict=True))
            results.append({
                "object": "organization.usage.embeddings.result",
                "input_tokens": row.get("tokens", 0),
                "num_model_requests": row.get("requests", 0),
                "project_id": by.get("project_id") or None,
                "user_id": None,
                "api_key_id": by.get("api_key_id") or None,
                "model": by.get("model"),
                "num_items": row.get("items", 0),
                "cache_hits": row.get("hits", 0),
                "cache_saved_input_tokens": row.get("saved_tokens", 0),
            })  # fmt: skip
        data.append(_bucket(start, q, results))
    return _page(data, nxt)


def costs_page(q: Query, buckets: list[tuple[int, Totals]], nxt: int | None) -> dict[str, object]:
    group = [g for g in ("project_id", "line_item") if g in q.group_by]
    data = []
    for start, totals in buckets:
        results: list[dict[str, object]] = []
        for k, row in sorted(totals.items()):
            by = dict(zip(group, k, strict=True))
            for currency in sorted({m.split(":", 1)[1] for m in row if ":" in m}):
                results.append(
                    {
                        "object": "organization.costs.result",
                        "amount": _money(row.get(f"cost:{currency}", 0), currency),
                        "line_item": by.get("line_item"),
                        "project_id": by.get("project_id") or None,
                        "cache_saved_amount": _money(row.get(f"saved:{currency}", 0), currency),
                    }
                )
        data.append(_bucket(start, q, results))
    return _page(data, nxt)


def _money(nanos: int, currency: str) -> dict[str, object]:
    return {"value": amount(nanos), "currency": currency.lower()}


def _bucket(start: int, q: Query, results: list[dict[str, object]]) -> dict[str, object]:
    return {"object": "bucket", "start_time": start, "end_time": start + WIDTHS[q.width], "results": results}


def _page(data: list[dict[str, object]], nxt: int | None) -> dict[str, object]:
    return {"object": "page", "data": data, "has_more": nxt is not None, "next_page": f"page_{nxt}" if nxt else None}


__all__ = ["METRICS", "Query", "Reader", "costs_page", "parse_query", "usage_page"]
