"""Vector-changing parameters: the dimension and the upstream options, checked against the model.

Every option that is forwarded is also part of the cache key, so two requests share a vector only when
the upstream would have computed the same one. A null is "not given": it is never forwarded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..config.catalog import ModelSpec
from ..errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Params:
    dimension: int
    send_dimension: bool
    options: dict[str, Any] = field(default_factory=dict)
    # What computes the vector: the cache identity of the deployment the request is routed to (set by the
    # service from the fleet; upstreams/fleet.py). Part of the cache key and of the micro-batch group.
    identity: str = ""
    # A batch job's call (app/jobs/): never queues for upstream quota ahead of interactive calls
    # (upstreams/fleet.py). Part of the micro-batch group, not of the cache key.
    background: bool = False

    @property
    def fusion(self) -> bool:
        return bool(self.options.get("enable_fusion"))


def _number(lo: float, hi: float) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi


def _integer(lo: int, hi: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


# name -> (endpoints that take it, check, what a valid value is)
KNOWN_OPTIONS: dict[str, tuple[frozenset[str], Callable[[Any], bool], str]] = {
    "output_type": (
        frozenset({"multimodal", "text"}),
        lambda v: v == "dense",
        '"dense" (the gateway caches dense vectors only)',
    ),
    "text_type": (frozenset({"text"}), lambda v: v in ("query", "document"), '"query" or "document"'),
    "instruct": (
        frozenset({"multimodal", "text"}),
        lambda v: isinstance(v, str) and 0 < len(v) <= 4096,
        "a string of 1..4096 characters",
    ),
    "fps": (frozenset({"multimodal"}), _number(0, 1), "a number in 0..1"),
    "enable_fusion": (frozenset({"multimodal"}), lambda v: isinstance(v, bool), "true or false"),
    "res_level": (frozenset({"multimodal"}), _integer(0, 3), "an integer in 0..3"),
    "max_video_frames": (frozenset({"multimodal"}), _integer(1, 64), "an integer in 1..64"),
}


MAX_UNKNOWN_DEPTH = 32


def _depth(value: object) -> int:
    """How deep a JSON value nests (a scalar is 0), counted without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            deepest = max(deepest, level)
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def resolve(
    spec: ModelSpec,
    upstream_kind: str,
    dimension: object,
    options: dict[str, Any],
    *,
    dim_param: str,
    opt_prefix: str,
    forward_unknown: bool,
) -> Params:
    """Check the dimension and options for `spec`; `dim_param`/`opt_prefix` name fields in errors."""
    if dimension is None and not options:  # the common request: the model's own dimension, nothing forwarded
        return _plain(spec.default_dimension, spec.send_dimension)
    if dimension is None:  # sent all the same: the upstream's own default never decides the length
        dim, send = spec.default_dimension, spec.send_dimension
    else:
        if not isinstance(dimension, int) or isinstance(dimension, bool) or not spec.allows_dimension(dimension):
            raise InvalidRequest(
                f"{dim_param}: {dimension!r} is not allowed for {spec.name} (allowed: {spec.describe_dimensions()})",
                param=dim_param,
            )
        dim, send = dimension, True
    given = {k: v for k, v in options.items() if v is not None}
    if given and upstream_kind != "dashscope":
        name = sorted(given)[0]
        raise InvalidRequest(f"{opt_prefix}{name}: not supported by {spec.name}", param=f"{opt_prefix}{name}")
    for name, value in given.items():
        param = f"{opt_prefix}{name}"
        known = KNOWN_OPTIONS.get(name)
        if known is None:
            if not forward_unknown:
                raise InvalidRequest(f"{param}: unknown parameter", param=param)
            if _depth(value) > MAX_UNKNOWN_DEPTH:  # deeper than any real option; orjson cannot key it either
                raise InvalidRequest(f"{param}: nested deeper than {MAX_UNKNOWN_DEPTH} levels", param=param)
            continue  # DashScope takes any JSON value here (LlamaIndex sends {"kwargs": {...}}): sent as it is
        endpoints, check, expected = known
        if spec.endpoint not in endpoints:
            raise InvalidRequest(f"{param}: not supported by {spec.name}", param=param)
        if not check(value):
            raise InvalidRequest(f"{param}: must be {expected}", param=param)
        if name == "enable_fusion" and value and not spec.enable_fusion:
            raise InvalidRequest(f"{param}: not supported by {spec.name}", param=param)
    return Params(dim, send, given)


@lru_cache(maxsize=256)
def _plain(dimension: int, send: bool) -> Params:
    """The params of a request that sets nothing, made once (Params is frozen and its options never change)."""
    return Params(dimension, send)


def dashscope_options(spec: ModelSpec, upstream_kind: str, parameters: dict[str, Any]) -> Params:
    """DashScope's `parameters` (the native routes and async tasks): `dimension` and the options."""
    options = {k: v for k, v in parameters.items() if k != "dimension"}
    return resolve(spec, upstream_kind, parameters.get("dimension"), options, dim_param="parameters.dimension",
                   opt_prefix="parameters.", forward_unknown=True)  # fmt: skip
