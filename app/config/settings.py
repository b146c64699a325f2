"""Typed settings: environment variables, then an optional YAML file, then defaults.

The YAML file is named by `--config FILE` (the CLI puts it in EMBEDDING_GATEWAY_CONFIG so that every
worker process reads the same file). Environment variables win over the file. Secrets are SecretStr, so
the settings dump (`embedding-gateway check-config`) and /readyz never show them.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ..jobs.settings import JobSettings
from ..usage.config import AdminKeys, TeamUsage, UsageSettings
from .upstream import UpstreamConfig
from .yamlfile import YamlSource

CONFIG_ENV = "EMBEDDING_GATEWAY_CONFIG"
# prometheus-client's own variable: set, its metrics live in files there, shared by the worker processes.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

FailurePolicy = Literal["local", "open", "closed"]
OPENAI_URL = "https://api.openai.com/v1"
KEY_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
TEAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TeamConfig(TeamUsage):
    """One team: its API keys (hashes only), the models it may use and its limits (unset: no limit)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    keys: list[str] = Field(
        default_factory=list, description="SHA-256 hashes of the team's keys, 'sha256:<hex>' (create-key prints them)"
    )
    models: list[str] = Field(default_factory=lambda: ["*"], description="model names the team may use; '*': all")
    rpm: int | None = Field(default=None, ge=1, description="requests per window (limits_window_s, a minute)")
    tpm: int | None = Field(default=None, ge=1, description="upstream-billed tokens per window")
    concurrency: int | None = Field(default=None, ge=1, description="requests in flight at once")
    daily_tokens: int | None = Field(default=None, ge=1, description="upstream-billed tokens per UTC day")

    @field_validator("keys")
    @classmethod
    def _hashes_only(cls, keys: list[str]) -> list[str]:
        for i, key in enumerate(keys):
            # Never echo the value: an operator may have pasted a plaintext key here by mistake.
            if not isinstance(key, str) or not KEY_HASH.match(key):
                raise ValueError(
                    f"entry {i} is not a key hash 'sha256:<64 lowercase hex digits>' "
                    "(store hashes, never keys: `embedding-gateway create-key --team NAME` prints both)"
                )
        return keys


class LimitFailurePolicy(BaseModel):
    """What each kind of limit does while its Redis is unreachable: `local` enforces it in each process
    with the limit divided by the live processes (heartbeats; at least replicas x workers), `open` stops
    enforcing it, `closed` refuses (503)."""

    model_config = ConfigDict(extra="forbid")

    requests: FailurePolicy = "local"
    tokens: FailurePolicy = "local"
    concurrency: FailurePolicy = "local"
    daily_tokens: FailurePolicy = "local"
    upstream: FailurePolicy = "local"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="", case_sensitive=False, hide_input_in_errors=True)

    # The fixed environment names of the upstreams and the cache.
    dashscope_api_key: SecretStr | None = None
    dashscope_base_url: str = "https://dashscope.aliyuncs.com/api/v1"
    openai_api_key: SecretStr | None = None
    openai_base_url: str = OPENAI_URL
    openai_encoding_format: Literal["auto", "float", "base64"] = Field(
        default="auto", description="auto: base64 from OpenAI's own API (as its SDK asks), float from any other server"
    )
    redis_url: SecretStr | None = Field(default=None, description="unset: an in-process cache serves")

    # Operators add upstreams and models, or override built-in ones, in the config file.
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    local_model: bool = Field(default=True, description="serve all-minilm-l6-v2 when its extra is installed")
    local_threads: int = Field(default=1, ge=1, le=64, description="torch threads of the local model")

    # Cache.
    cache_ttl_s: int = Field(default=30 * 24 * 3600, ge=1)
    cache_namespace: str = Field(default="eg", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    cache_local_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    cache_hot_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="with Redis: a per-worker LRU of recent vectors before it; 0: off"
    )
    cache_text_max_bytes: int = Field(
        default=48 * 1024 * 1024, ge=0, description="per worker: JSON text of recently served vectors, reused"
    )
    redis_timeout_s: float = Field(default=0.25, gt=0, le=10)
    redis_retry_after_s: float = Field(default=2.0, ge=0, description="skip Redis this long after a failure")
    redis_cluster: Literal["auto", "cluster", "single"] = Field(
        default="auto", description="auto: ask the server at start (INFO cluster); force one for a server down then"
    )
    redis_max_connections: int = Field(
        default=64, ge=1, le=10_000, description="per worker, cache and leases (per node of a cluster); then wait"
    )

    # Requests.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="all request headers together")
    max_header_count: int = Field(default=100, ge=10, description="request headers per request")
    max_input_items: int = Field(default=2048, ge=1)

    # The HTTP server layer (docs/operations.md, "Connections"): per worker process.
    http_head_timeout_s: float = Field(default=10.0, gt=0, le=300, description="to receive a whole request head")
    http_body_timeout_s: float = Field(default=10.0, gt=0, le=300, description="longest wait for more of a body")
    http_keepalive_timeout_s: int = Field(default=75, ge=1, le=600, description="idle time between requests")
    http_write_timeout_s: float = Field(default=20.0, gt=0, le=600, description="for a reader to take an answer")
    http_min_body_rate: float = Field(default=240.0, ge=0, description="body bytes/s, on average, past the grace")
    http_body_grace_s: float = Field(default=5.0, gt=0, le=300, description="before the body rate applies")
    http_max_connections: int = Field(default=16384, ge=1, description="open client connections (fewer: descriptors)")
    http_max_connections_per_address: int = Field(default=0, ge=0, description="per client address; 0: no cap")
    http_fd_reserve: int = Field(
        default=256,
        ge=16,
        description="descriptors kept from clients for Redis, files, the media fetcher "
        "(each upstream's max_connections are reserved on top)",
    )
    memory_budget_bytes: int = Field(
        default=384 * 1024 * 1024,
        ge=1024 * 1024,
        description="request bodies, fetched media, vectors and answer slices held at once",
    )
    memory_budget_team_share: float = Field(
        default=0.25, gt=0, le=1, description="of the memory budget, the most one team's requests hold at once"
    )
    memory_wait_s: float = Field(default=5.0, ge=0, le=60, description="wait for the memory budget, then 503")
    management_concurrency: int = Field(
        default=4, ge=1, le=1000, description="per worker: a team's file, batch, task, usage requests at once; then 429"
    )
    transfer_concurrency: int = Field(
        default=8, ge=1, le=1000, description="per worker: a team's uploads and downloads of files at once; then 429"
    )

    # Upstream calls: deadline, retries, breaker, micro-batching, coalescing.
    request_deadline_s: float = Field(
        default=30.0, gt=0, le=600, description="a request's upstream part (waits, calls, retries) ends by then"
    )
    retry_attempts: int = Field(default=10, ge=1, le=20, description="attempts per upstream call, the first included")
    retry_base_s: float = Field(default=0.05, gt=0, le=10, description="first backoff; doubles each retry")
    retry_max_s: float = Field(default=2.0, gt=0, le=60, description="longest backoff (Retry-After may be longer)")
    breaker_failures: int = Field(default=10, ge=1, description="consecutive upstream failures that open its circuit")
    breaker_open_s: float = Field(default=5.0, gt=0, le=600, description="how long an open circuit answers 503")
    batch_window_ms: float = Field(
        default=2.0, ge=0, le=1000, description="how long a miss waits for others to share its upstream call"
    )
    coalesce_wait_s: float = Field(
        default=10.0, ge=0, le=600, description="longest wait for another replica fetching the same item"
    )
    shutdown_drain_s: float = Field(
        default=0.0,
        ge=0,
        le=300,
        description="on SIGTERM: /readyz answers 503 and requests are still served this long before shutdown",
    )

    # Teams, keys and limits (docs/limits.md).
    gateway_auth: Literal["required", "off"] = Field(
        default="required", description="off: requests need no key (allowed quietly on a loopback bind only)"
    )
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    admins: AdminKeys = Field(default_factory=list, description="hashes of keys that read every team's usage")
    usage: UsageSettings = Field(default_factory=UsageSettings)
    teams_reload_s: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="how often each worker checks the config file for changed teams; 0: on SIGHUP only",
    )
    limits_redis_url: SecretStr | None = Field(
        default=None, description="Redis for limit state (maxmemory-policy noeviction); unset: REDIS_URL"
    )
    limits_timeout_s: float = Field(
        default=1.0, gt=0, le=10, description="Redis counts as failing when no decision's reply came back this long"
    )
    limits_max_connections: int = Field(
        default=16, ge=1, le=10_000, description="per worker, limit decisions (per node of a cluster); then wait"
    )
    limits_heartbeat_s: float = Field(
        default=5.0, gt=0, le=300, description="processes beat this often in Redis: the fallback divides by them"
    )
    limits_retry_after_s: float = Field(default=2.0, ge=0, description="local fallback this long after a failure")
    limits_on_redis_failure: LimitFailurePolicy = Field(default_factory=LimitFailurePolicy)
    limits_window_s: float = Field(
        default=60.0, ge=0.5, le=3600, description="the 'minute' of rpm/tpm; shorter only for tests and demos"
    )
    limits_lease_s: float = Field(default=300.0, ge=1, description="a concurrency slot of a lost replica frees after")
    upstream_queue_s: float = Field(
        default=5.0, ge=0, le=300, description="longest wait for an upstream quota slot before answering 429"
    )
    upstream_quota_slack_s: float = Field(
        default=0.5, ge=0, le=60, description="calls are spaced as if the window were this much longer (jitter margin)"
    )
    replicas: int = Field(
        default=1, ge=1, le=10_000, description="least number of instances sharing the limits (heartbeats count them)"
    )
    workers: int = Field(default=1, ge=1, le=1024, description="worker processes per instance (set by the CLI)")

    # Media fetched by content (docs/hardening.md): off by default; when on, image URLs are fetched by the
    # gateway (SSRF-checked), keyed by their bytes and sent upstream as data URIs.
    media_fetch: bool = Field(default=False, description="fetch image URLs and key them by their bytes")
    media_fetch_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="cap per fetched image")
    media_fetch_timeout_s: float = Field(default=10.0, gt=0, le=120, description="deadline of one fetch")
    media_fetch_max_redirects: int = Field(default=3, ge=0, le=10)
    media_fetch_max_urls: int = Field(default=64, ge=1, description="distinct image URLs fetched per request")
    media_fetch_max_total_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="all images of a request")
    media_fetch_concurrency: int = Field(default=8, ge=1, le=64, description="fetches at once per request")
    media_fetch_allow_hosts: list[str] = Field(
        default_factory=list,
        description="host or host:port entries whose addresses are not checked (tests, an internal image "
        "store): they may be private; everything else about a fetch still applies",
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    jobs: JobSettings = Field(default_factory=JobSettings, description="batch jobs (app/jobs/settings.py)")

    @field_validator("dashscope_base_url", "openai_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _check_teams(self) -> Settings:
        owner: dict[str, str] = {}
        for name, team in self.teams.items():
            if not TEAM_NAME.match(name):
                raise ValueError(f"teams: team name {name[:64]!r} must match {TEAM_NAME.pattern}")
            for i, key in enumerate(team.keys):
                if key in owner:
                    raise ValueError(f"teams.{name}.keys[{i}]: the same key hash is also in team {owner[key]!r}")
                owner[key] = name
        return self

    def limits_url(self) -> str | None:
        url = self.limits_redis_url or self.redis_url
        return url.get_secret_value() if url is not None else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlSource(settings_cls, os.environ.get(CONFIG_ENV)))

    def upstream_configs(self) -> dict[str, UpstreamConfig]:
        """Built-in upstreams from the fixed environment names, overridden by the file's entries."""
        built_in = {
            "dashscope": UpstreamConfig(
                kind="dashscope", base_url=self.dashscope_base_url, api_key=self.dashscope_api_key
            ),
            "openai": UpstreamConfig(
                kind="openai",
                base_url=self.openai_base_url,
                api_key=self.openai_api_key,
                encoding_format=self.openai_encoding(),
            ),
            "local": UpstreamConfig(kind="local"),
        }
        return {**built_in, **self.upstreams}

    def openai_encoding(self) -> Literal["float", "base64"]:
        """How the built-in openai upstream is asked for vectors; auto: base64 from OpenAI's own API (its SDK
        asks so), float from any other server (every OpenAI-compatible server takes float, not all base64)."""
        if self.openai_encoding_format != "auto":
            return self.openai_encoding_format
        return "base64" if self.openai_base_url.rstrip("/") == OPENAI_URL else "float"

    def public_dump(self) -> dict[str, Any]:
        """Settings as shown to operators: secrets masked (SecretStr renders as '**********')."""
        return self.model_dump(mode="json")
