"""The miss path below the service: identical misses fetched once (coalescer, leases across replicas),
misses of concurrent requests batched into upstream calls (batcher)."""
