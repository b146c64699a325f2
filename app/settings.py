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
    max_connections: int = Field(default=64, ge=1)
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
    redis_timeout_s: float = Field(default=0.25, gt=0, le=10)
    redis_retry_after_s: float = Field(default=2.0, ge=0, description="skip Redis this long after a failure")

    # Requests.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="all request headers together")
    max_header_count: int = Field(default=100, ge=10, description="request headers per request")
    max_input_items: int = Field(default=2048, ge=1)
    upstream_concurrency: int = Field(default=8, ge=1, description="chunks of one request sent at once")

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
