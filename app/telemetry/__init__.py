"""OpenTelemetry traces: off unless the standard OTEL_* variables turn them on (config.py); then one span
per request (incoming.py) and spans around the pipeline's parts, added by wrapping those parts where the
gateway is wired (pipeline.py, upstream.py), so that with traces off nothing of this runs at all."""
