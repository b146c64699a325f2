"""Whether traces are on, read from the standard OpenTelemetry variables only (the platform's usual
deployment variables turn them on; nothing in the gateway's own settings does).

On when OTEL_SDK_DISABLED is not `true` and an OTLP endpoint is named (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
or OTEL_EXPORTER_OTLP_ENDPOINT), or OTEL_TRACES_EXPORTER=otlp asks for the default one (localhost:4318);
OTEL_TRACES_EXPORTER=none turns them off. What the SDK would silently replace by a default is refused at
start instead, naming the variable: a protocol other than http/protobuf (the gateway ships the OTLP/HTTP
exporter only), an exporter other than otlp, an unknown sampler, a ratio outside 0..1 (the SDK would fall
back to sampling every request). The SDK itself reads the rest (endpoint, headers, timeout, compression,
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER[_ARG], OTEL_BSP_*).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SERVICE_NAME = "embedding-gateway"
SAMPLERS = frozenset(
    {"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
     "parentbased_traceidratio"}
)  # fmt: skip
PROTOCOL = "http/protobuf"


@dataclass(frozen=True, slots=True)
class TraceConfig:
    endpoint: str  # where spans go (for the log line at start; the exporter reads the variables itself)
    sampler: str
    ratio: float | None
    service_name: str | None  # the gateway's default when neither OTEL_SERVICE_NAME nor the attributes name one


def from_env(env: Mapping[str, str]) -> TraceConfig | None:
    """The trace configuration, or None when traces are off; ValueError naming the variable when invalid."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return None
    if exporter not in ("", "otlp"):
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter}: only otlp (OTLP over HTTP) or none is supported")
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint and exporter != "otlp":
        return None
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name, "").strip()
        if protocol:
            if protocol != PROTOCOL:
                raise ValueError(f"{name}={protocol}: the gateway exports OTLP over HTTP only ({PROTOCOL}, port 4318)")
            break
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if sampler not in SAMPLERS:
        raise ValueError(f"OTEL_TRACES_SAMPLER={sampler}: one of {', '.join(sorted(SAMPLERS))}")
    ratio = _ratio(env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()) if sampler.endswith("traceidratio") else None
    named = "OTEL_SERVICE_NAME" in env or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    return TraceConfig(endpoint or "http://localhost:4318", sampler, ratio, None if named else SERVICE_NAME)


def _ratio(arg: str) -> float:
    if not arg:
        return 1.0
    try:
        ratio = float(arg)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={arg}: a ratio between 0 and 1 (0.01 samples 1 % of requests)")
    return ratio
