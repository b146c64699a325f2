"""One upstream's settings: where it is, its key, its timeouts and pool, and how its vectors are asked for."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

UpstreamKind = Literal["dashscope", "openai", "local"]


class UpstreamConfig(BaseModel):
    """One upstream an operator can point models at."""

    model_config = ConfigDict(extra="forbid")

    kind: UpstreamKind
    base_url: str = ""
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(default=None, description="read the key from this environment variable")
    workspace: str | None = Field(default=None, description="DashScope X-DashScope-WorkSpace header")
    timeout_s: float = Field(default=30.0, gt=0, description="longest wait between two reads of an answer")
    connect_timeout_s: float = Field(default=3.0, gt=0)
    max_connections: int = Field(default=64, ge=1, description="open connections, and calls in flight, at most")
    keepalive_s: float = Field(
        default=4.0, gt=0, le=3600, description="idle connections close after this (below servers' usual 5 s)"
    )
    max_response_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=64 * 1024,
        description="cap of one answer, received and decoded (each call's cap is also what its batch can take)",
    )
    model_path: str | None = Field(default=None, description="local kind: a sentence-transformers directory")
    encoding_format: Literal["float", "base64"] = Field(
        default="float",
        description="openai kind: how vectors are asked for; base64 (OpenAI, vLLM, Infinity) spares the float parse",
    )

    @field_validator("encoding_format")
    @classmethod
    def _openai_only(cls, value: str, info: ValidationInfo) -> str:
        if value != "float" and info.data.get("kind") != "openai":
            raise ValueError("only upstreams of kind openai take it (DashScope's native API answers floats only)")
        return value

    def identity(self) -> str:
        """What computes this upstream's vectors, for the cache key: its kind and address (the DashScope
        workspace, the local model's path), never its key."""
        if self.kind == "local":
            return f"local {self.model_path or 'built-in'}"
        return " ".join(filter(None, (self.kind, self.base_url.rstrip("/"), self.workspace)))

    def key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value() or None
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        return None
