"""The Redis shapes of tests/redis (cluster, password, TLS, Sentinel), each started once for the folder:
its tests only read them, and a cluster takes about 7 s to form (it was formed once per module, three
times). tests/e2e starts its own per module (some of its tests kill nodes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redisfarm import (
    PASSWORD,
    Cluster,
    SentinelSet,
    Single,
    start_cluster,
    start_password,
    start_sentinel,
    start_tls,
)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def redis_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Single]:
    single = start_password(tmp_path_factory.mktemp("redis-password"))
    yield single
    single.close()


@pytest.fixture(scope="session")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Single]:
    single = start_tls(tmp_path_factory.mktemp("redis-tls"), password=PASSWORD)
    yield single
    single.close()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    s = start_sentinel(tmp_path_factory.mktemp("redis-sentinel"))
    yield s
    s.close()
