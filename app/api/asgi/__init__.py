"""The front layer: one pure ASGI layer in front of FastAPI (front.py), and its parts (aliases, ids, metrics
and the access log, header cap, drain, the fast path of the hot routes)."""
