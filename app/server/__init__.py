"""The HTTP server layer under the ASGI app: uvicorn's httptools protocol with read deadlines, a
connection cap and h2c offers declined (protocol.py), the per-worker registry of connections
(connections.py) and the descriptor budget (descriptors.py). docs/operations.md describes the settings."""
