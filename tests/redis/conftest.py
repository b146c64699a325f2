"""The Redis shapes of tests/redis (cluster, password, TLS, Sentinel), each started once for the folder:
its tests only read them, and a cluster takes about 7 s to form (it was formed once per module, three
times). tests/e2e starts its own per module (some of its tests kill nodes)."""

from __future__ import annotations

from tests.support.redisfarm import farm_fixtures

redis_cluster, redis_password, redis_tls, redis_sentinel = farm_fixtures("session")
