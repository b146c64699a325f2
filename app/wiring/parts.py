"""The smaller parts built from the settings: the flights' times, the media fetcher, one worker's client
connections, what one request may hold, the memory budget and the memos of vector text."""

from __future__ import annotations

from collections.abc import Iterable

from ..api.rendering import head_too_large
from ..api.vectortext import BASE64_RATIO, FLOAT_RATIO, VectorText, base64_json, float_json
from ..config.catalog import ModelSpec
from ..config.settings import Settings
from ..config.upstream import UpstreamConfig
from ..flights.wiring import FlightTimes
from ..inputs.media.fetcher import Fetcher, open_client
from ..limits.desks import Desks
from ..metrics import Metrics
from ..runtime.budget import MemoryBudget
from ..runtime.state import RequestCaps
from ..server.connections import Connections, Rules, for_worker


def flight_times(s: Settings) -> FlightTimes:
    lease_s = s.request_deadline_s + 1.0  # a lease outlives its holder's request by a second at most
    return FlightTimes(s.batch_window_ms / 1000, s.coalesce_wait_s, lease_s, s.redis_timeout_s)


def fetcher_of(s: Settings, metrics: Metrics) -> Fetcher | None:
    """The media fetcher when media_fetch is on."""
    if not s.media_fetch:
        return None
    return Fetcher(
        open_client(s.media_fetch_concurrency),
        max_bytes=s.media_fetch_max_bytes,
        timeout_s=s.media_fetch_timeout_s,
        max_redirects=s.media_fetch_max_redirects,
        allow_hosts=frozenset(s.media_fetch_allow_hosts),
        concurrency=s.media_fetch_concurrency,
        max_urls=s.media_fetch_max_urls,
        max_total_bytes=s.media_fetch_max_total_bytes,
        count=lambda outcome: metrics.media_fetches.labels(outcome).inc(),
    )


def connections_of(
    s: Settings, configs: dict[str, UpstreamConfig], catalog: Iterable[ModelSpec], metrics: Metrics
) -> Connections:
    """One worker's client connections, leaving descriptors for its own: each served upstream's pool, the
    media fetcher, Redis and files (http_fd_reserve)."""
    used = {spec.upstream for spec in catalog}
    reserve = s.http_fd_reserve + sum(configs[name].max_connections for name in used)
    reserve += s.media_fetch_concurrency if s.media_fetch else 0
    rules = Rules(head_timeout_s=s.http_head_timeout_s, body_timeout_s=s.http_body_timeout_s,
                  write_timeout_s=s.http_write_timeout_s, min_body_rate=s.http_min_body_rate,
                  body_grace_s=s.http_body_grace_s, max_per_address=s.http_max_connections_per_address,
                  max_head_bytes=s.max_header_bytes + 8 * 1024, head_refusal=head_too_large)  # fmt: skip
    return for_worker(s.http_max_connections, reserve, rules, counter=metrics.connections_closed)


def caps_of(s: Settings) -> RequestCaps:
    return RequestCaps(s.max_body_bytes, s.max_input_items)


def memory_of(s: Settings, metrics: Metrics) -> MemoryBudget:
    """The process's budget for what requests hold at once: bodies, fetched media, vectors, answers."""
    return MemoryBudget(
        s.memory_budget_bytes, wait_s=s.memory_wait_s, share=s.memory_budget_team_share, counter=metrics.memory_waits
    )


def desks_of(s: Settings, metrics: Metrics) -> tuple[Desks, Desks]:
    """A team's management requests, and its uploads and downloads, at once in this process."""
    what = "file, batch, task or usage requests"
    management = Desks(
        s.management_concurrency, metrics, kind="management", what=what, setting="management_concurrency"
    )
    what = "uploads and downloads of files and results"
    transfers = Desks(s.transfer_concurrency, metrics, kind="transfers", what=what, setting="transfer_concurrency")
    return management, transfers


def calls_memory_of(s: Settings, metrics: Metrics) -> MemoryBudget:
    """Room for the upstream answers being received (batcher.py), apart from the requests' budget: requests
    hold room for their vectors while their calls are in flight, so calls that took from the same room could
    wait for requests that wait for them. A team's share of the budget: 96 MiB by default, ~15 full calls."""
    return MemoryBudget(
        int(s.memory_budget_bytes * s.memory_budget_team_share),
        wait_s=s.memory_wait_s,
        counter=metrics.memory_waits,
        name="calls",
    )


def vector_texts(s: Settings) -> tuple[VectorText, VectorText]:
    """The memos of vector text (float, base64) share `cache_text_max_bytes`: float text takes about twice
    the room of base64 text, so two thirds of the budget go to floats."""
    budget = s.cache_text_max_bytes
    return VectorText(budget * 2 // 3, float_json, FLOAT_RATIO), VectorText(budget // 3, base64_json, BASE64_RATIO)


def text_fetcher_of(s: Settings) -> Fetcher:
    """The media fetcher's checks (public addresses only, but for `media_fetch_allow_hosts`; redirects
    checked hop by hop) for the text files of DashScope tasks (batch jobs), whatever `media_fetch` says."""
    return Fetcher(open_client(2), max_bytes=s.jobs.max_file_bytes, timeout_s=s.media_fetch_timeout_s,
                   max_redirects=s.media_fetch_max_redirects, allow_hosts=frozenset(s.media_fetch_allow_hosts),
                   concurrency=2, max_urls=1, max_total_bytes=s.jobs.max_file_bytes)  # fmt: skip
