"""The model catalog: a public model name -> upstream, upstream model id, modalities, dimensions, limits.

Built-in entries cover the DashScope models of upstream-contracts.md (enabled when DASHSCOPE_API_KEY is set),
OpenAI's embedding models (enabled when OPENAI_API_KEY is set) and the local all-minilm-l6-v2 (enabled
when the `local` extra is installed). The config file's `models:` mapping adds entries or overrides fields
of built-in ones; an entry with `enabled: false` removes one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import NotFound
from ..usage.prices import BUILT_IN_PRICES, Price
from .upstream import UpstreamConfig

Modality = Literal["text", "image", "video", "multi_images"]
Endpoint = Literal["multimodal", "text"]

MB = 1024 * 1024


class DeploymentSpec(BaseModel):
    """One upstream serving a model (docs/deployments.md): its own quota, weight and cache group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upstream: str
    rpm: int | None = Field(default=None, ge=1, description="this deployment's account requests per minute")
    tpm: int | None = Field(default=None, ge=1, description="this deployment's account tokens per minute")
    weight: float = Field(default=1.0, gt=0, le=1_000_000, description="share of calls among healthy deployments")
    cache_group: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="deployments in one group serve the same vectors and share them in the cache",
    )


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    upstream: str = Field(description="shorthand for one deployment; with `deployments`, the first one's")
    deployments: tuple[DeploymentSpec, ...] = Field(default=(), description="empty: one, on `upstream`")
    upstream_model: str
    endpoint: Endpoint = Field(default="text", description="DashScope only: which native route serves it")
    modalities: frozenset[Modality] = frozenset({"text"})
    dimensions: tuple[int, ...] = Field(default=(), description="allowed values; empty: any up to max")
    default_dimension: int = Field(gt=0)
    max_dimension: int | None = None
    max_batch: int = Field(default=10, ge=1, description="items per upstream call")
    max_text_chars: int = Field(default=32_768, ge=1)
    max_image_bytes: int = Field(default=3 * MB, ge=1)
    image_formats: frozenset[str] = frozenset({"jpeg", "png", "bmp"})
    max_multi_images: int = Field(default=8, ge=1)
    fused_objects: bool = Field(default=False, description="one object with several keys -> one vector")
    enable_fusion: bool = Field(default=False, description="accepts parameters.enable_fusion")
    token_ids: bool = Field(default=False, description="accepts OpenAI token-id inputs")
    send_dimension: bool = Field(
        default=True, description="send the dimension even when the client gave none (false: servers that refuse it)"
    )
    rpm: int | None = Field(default=None, ge=1, description="upstream account requests per minute")
    tpm: int | None = Field(default=None, ge=1, description="upstream account tokens per minute")
    price: Price | None = Field(default=None, description="what the upstream bills; none: tokens without money")
    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _one_deployment_at_least(cls, data: Any) -> Any:
        """`upstream` (+ the model's rpm/tpm) is one deployment; listed deployments without their own
        rpm/tpm take the model's, and the first names the model's `upstream`."""
        if not isinstance(data, dict):
            return data
        listed = data.get("deployments")
        quota = {k: data[k] for k in ("rpm", "tpm") if data.get(k) is not None}
        if listed:
            if isinstance(listed, list | tuple) and all(isinstance(d, dict) for d in listed):
                data = {**data, "deployments": [{**quota, **d} for d in listed]}
                data["upstream"] = listed[0].get("upstream")
        elif "upstream" in data:
            data = {**data, "deployments": [{"upstream": data["upstream"], **quota}]}
        return data

    @model_validator(mode="after")
    def _check_dimensions(self) -> ModelSpec:
        names = [d.upstream for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError("deployments: each upstream may appear once")
        if self.dimensions and self.default_dimension not in self.dimensions:
            raise ValueError(f"default_dimension {self.default_dimension} is not among {list(self.dimensions)}")
        return self

    def allows_dimension(self, dim: int) -> bool:
        if self.dimensions:
            return dim in self.dimensions
        return 1 <= dim <= (self.max_dimension or self.default_dimension)

    def describe_dimensions(self) -> str:
        if self.dimensions:
            return ", ".join(str(d) for d in self.dimensions)
        return f"1..{self.max_dimension or self.default_dimension}"


_TONGYI = {
    "upstream": "dashscope",
    "endpoint": "multimodal",
    "modalities": ["text", "image", "video", "multi_images"],
    "max_batch": 20,
    "max_text_chars": 4096,
    "max_multi_images": 8,
}
_TONGYI_DATED = {
    **_TONGYI,
    "max_image_bytes": 10 * MB,
    "image_formats": ["jpeg", "png", "bmp", "webp", "tiff", "gif"],
    "fused_objects": True,
    "max_multi_images": 64,
}
_PLUS_DIMS = [64, 128, 256, 512, 1024, 1152]
_FLASH_DIMS = [64, 128, 256, 512, 768]

BUILT_IN: dict[str, dict[str, Any]] = {
    "tongyi-embedding-vision-plus": {**_TONGYI, "dimensions": _PLUS_DIMS, "default_dimension": 1152},
    "tongyi-embedding-vision-flash": {**_TONGYI, "dimensions": _FLASH_DIMS, "default_dimension": 768},
    "tongyi-embedding-vision-plus-2026-03-06": {
        **_TONGYI_DATED,
        "dimensions": _PLUS_DIMS,
        "default_dimension": 1152,
    },
    "tongyi-embedding-vision-flash-2026-03-06": {
        **_TONGYI_DATED,
        "dimensions": _FLASH_DIMS,
        "default_dimension": 768,
    },
    "qwen3-vl-embedding": {
        "upstream": "dashscope",
        "endpoint": "multimodal",
        "modalities": ["text", "image", "video"],
        "dimensions": [2560, 2048, 1536, 1024, 768, 512, 256],
        "default_dimension": 2560,
        "max_batch": 20,
        "max_text_chars": 128_000,
        "max_image_bytes": 10 * MB,
        "image_formats": ["jpeg", "png", "bmp", "webp", "tiff", "gif"],
        "enable_fusion": True,
    },
    "multimodal-embedding-v1": {
        "upstream": "dashscope",
        "endpoint": "multimodal",
        "modalities": ["text", "image", "video"],
        "dimensions": [1024],
        "default_dimension": 1024,
        "max_batch": 20,
        "max_text_chars": 2048,
        "rpm": 120,
    },
    "text-embedding-v4": {
        "upstream": "dashscope",
        "dimensions": [2048, 1536, 1024, 768, 512, 256, 128, 64],
        "default_dimension": 1024,
        "max_batch": 10,
        "max_text_chars": 32_768,
    },
    "text-embedding-v3": {
        "upstream": "dashscope",
        "dimensions": [1024, 768, 512],
        "default_dimension": 1024,
        "max_batch": 10,
        "max_text_chars": 32_768,
        "rpm": 6000,
        "tpm": 24_000_000,
    },
    "text-embedding-3-small": {
        "upstream": "openai",
        "default_dimension": 1536,
        "max_dimension": 1536,
        "max_batch": 2048,
        "token_ids": True,
    },
    "text-embedding-3-large": {
        "upstream": "openai",
        "default_dimension": 3072,
        "max_dimension": 3072,
        "max_batch": 2048,
        "token_ids": True,
    },
    "all-minilm-l6-v2": {
        "upstream": "local",
        "upstream_model": "all-MiniLM-L6-v2",
        "dimensions": [384],
        "default_dimension": 384,
        "max_batch": 64,
        "max_text_chars": 16_384,
    },
}
# Dated snapshots share their undated model's limits except where the table above says otherwise.


class Catalog:
    """Public model name -> ModelSpec, built once at start from the built-ins and the config file."""

    def __init__(self, specs: dict[str, ModelSpec], unavailable: dict[str, str] | None = None) -> None:
        self._specs = specs
        self._unavailable = unavailable or {}

    def why_unavailable(self, name: str) -> str | None:
        """For a configured model that is not served: what would enable it."""
        return self._unavailable.get(name)

    def get(self, name: str) -> ModelSpec | None:
        return self._specs.get(name)

    def served(self, name: str, param: str = "model") -> ModelSpec:
        """The model `name`; 404 naming `param` (and what would enable it) when it is not served here."""
        spec = self._specs.get(name)
        if spec is None:
            reason = self.why_unavailable(name)
            hint = f"it is not enabled: {reason}" if reason else "see GET /v1/models"
            raise NotFound(
                f"{param}: model {name[:100]!r} is not served here ({hint})", param=param, code="model_not_found"
            )
        return spec

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return list(self._specs)


def build_catalog(
    models: Mapping[str, Mapping[str, Any]], upstreams: Mapping[str, UpstreamConfig], available: dict[str, str | None]
) -> Catalog:
    """Merge built-ins with the file's entries (`models`: the `models:` section); keep only models whose
    upstream (of `upstreams`, every configured one) is available.

    `available` maps each upstream name to None when it can serve (a key is set, the local model is
    installed), else to what would enable it.
    Raises ValueError with the model's name and field when an entry is wrong.
    """
    merged: dict[str, dict[str, Any]] = {name: dict(fields) for name, fields in BUILT_IN.items()}
    for name, fields in models.items():
        merged[name] = {**merged.get(name, {}), **fields}
    for name, price in BUILT_IN_PRICES.items():
        # A built-in price holds for the built-in upstream only: a model pointed elsewhere has none unless set.
        moved = {"upstream", "deployments"} & models.get(name, {}).keys()
        if name in merged and "price" not in merged[name] and not moved:
            merged[name]["price"] = price
    specs: dict[str, ModelSpec] = {}
    unavailable: dict[str, str] = {}
    for name, fields in merged.items():
        try:
            spec = ModelSpec(name=name, **{"upstream_model": name, **fields})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            raise ValueError(f"models.{name}{where}: {message}") from None
        check_deployments(name, spec, upstreams)
        if not spec.enabled:
            continue
        serving = tuple(d for d in spec.deployments if available.get(d.upstream, "not configured") is None)
        if serving:
            specs[name] = spec.model_copy(update={"deployments": serving, "upstream": serving[0].upstream})
        else:
            unavailable[name] = available.get(spec.upstream) or "its upstream is not configured"
    return Catalog(specs, unavailable)


def check_deployments(name: str, spec: ModelSpec, upstreams: Mapping[str, UpstreamConfig]) -> None:
    """Every deployment names a configured upstream, all of one kind (they take the same parameters)."""
    where = "upstream" if len(spec.deployments) == 1 else "deployments"
    for i, d in enumerate(spec.deployments):
        if d.upstream not in upstreams:
            at = "upstream" if where == "upstream" else f"deployments[{i}].upstream"
            raise ValueError(f"models.{name}.{at}: no upstream named {d.upstream!r}")
    kinds = {upstreams[d.upstream].kind for d in spec.deployments}
    if len(kinds) > 1:
        raise ValueError(f"models.{name}.deployments: upstreams of one kind only (found {', '.join(sorted(kinds))})")
