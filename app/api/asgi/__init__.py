"""The front layers: pure ASGI middleware in front of FastAPI (ids, metrics and the access log, header
cap, drain, the fast path of the hot routes)."""
