"""Upstream adapters: one module per kind, each pure request/response mapping plus one send."""
