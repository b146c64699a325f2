"""Typed settings: environment variables, then an optional YAML file, then defaults.

The YAML file is named by `--config FILE` (the CLI puts it in EMBEDDING_GATEWAY_CONFIG so that every
worker process reads the same file). Environment variables win over the file. Secrets are SecretStr, so
the settings dump (`embedding-gateway check-config`) and /readyz never show them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_ENV = "EMBEDDING_GATEWAY_CONFIG"

UpstreamKind = Literal["dashscope", "openai", "local"]


class UpstreamConfig(BaseModel):
    """One upstream an operator can point models at."""

    model_config = ConfigDict(extra="forbid")

    kind: UpstreamKind
    base_url: str = ""
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(default=None, description="read the key from this environment variable")
    workspace: str | None = Field(default=None, description="DashScope X-DashScope-WorkSpace header")
    timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=3.0, gt=0)
    max_connections: int = Field(default=64, ge=1, description="open connections, and calls in flight, at most")
    transport: Literal["pool", "httpx"] = Field(
        default="pool", description="pool: the gateway's lean HTTP/1.1 pool; httpx: httpx's own (proxies, HTTP/2)"
    )
    model_path: str | None = Field(default=None, description="local kind: a sentence-transformers directory")

    def key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value() or None
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        return None


class _YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if not self.path:
            return {}
        p = Path(self.path)
        if not p.is_file():
            raise ValueError(f"config file {self.path!r} does not exist")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {self.path!r} must hold a mapping at its top level")
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix="", case_sensitive=False)

    # The fixed environment names of the upstreams and the cache.
    dashscope_api_key: SecretStr | None = None
    dashscope_base_url: str = "https://dashscope.aliyuncs.com/api/v1"
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    redis_url: SecretStr | None = Field(default=None, description="unset: an in-process cache serves")

    # Operators add upstreams and models, or override built-in ones, in the config file.
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    local_model: bool = Field(default=True, description="serve all-minilm-l6-v2 when its extra is installed")

    # Cache.
    cache_ttl_s: int = Field(default=30 * 24 * 3600, ge=1)
    cache_namespace: str = Field(default="eg", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    cache_local_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    cache_hot_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="with Redis: a per-worker LRU of recent vectors before it; 0: off"
    )
    redis_timeout_s: float = Field(default=0.25, gt=0, le=10)
    redis_retry_after_s: float = Field(default=2.0, ge=0, description="skip Redis this long after a failure")

    # Requests.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_input_items: int = Field(default=2048, ge=1)

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

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("dashscope_base_url", "openai_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls, os.environ.get(CONFIG_ENV)))

    def upstream_configs(self) -> dict[str, UpstreamConfig]:
        """Built-in upstreams from the fixed environment names, overridden by the file's entries."""
        built_in = {
            "dashscope": UpstreamConfig(
                kind="dashscope", base_url=self.dashscope_base_url, api_key=self.dashscope_api_key
            ),
            "openai": UpstreamConfig(kind="openai", base_url=self.openai_base_url, api_key=self.openai_api_key),
            "local": UpstreamConfig(kind="local"),
        }
        return {**built_in, **self.upstreams}

    def public_dump(self) -> dict[str, Any]:
        """Settings as shown to operators: secrets masked (SecretStr renders as '**********')."""
        return self.model_dump(mode="json")
