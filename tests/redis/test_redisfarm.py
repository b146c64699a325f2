"""The test harness's Redis deployments are what they claim: a 3+3 cluster spreading keys over three
masters, a Redis refusing a wrong password, a TLS-only Redis trusting only its own CA, a Sentinel naming
the master."""

from __future__ import annotations

import redis
from redis.sentinel import Sentinel

from tests.support.redisfarm import Cluster, SentinelSet, Single


def test_cluster_has_three_masters_with_a_replica_each(redis_cluster: Cluster) -> None:
    roles = redis_cluster.roles()
    assert sorted(roles.values()) == ["master"] * 3 + ["slave"] * 3
    for master in redis_cluster.masters():
        assert redis_cluster.replica_of(master).port != master.port
    client = redis_cluster.client()
    keys = [f"farm:{i}" for i in range(60)]
    for k in keys:
        client.set(k, k)
    assert client.mget_nonatomic(keys) == [k.encode() for k in keys]
    holders = {client.get_node_from_key(k).port for k in keys}
    assert len(holders) == 3
    info = redis.Redis(port=redis_cluster.nodes[0].port).info("cluster")
    assert info["cluster_enabled"] == 1
    client.delete(*keys)


def test_password_is_required(redis_password: Single) -> None:
    assert redis_password.client().ping()
    try:
        redis_password.node.client(password="wrong-password").ping()
    except redis.AuthenticationError:
        pass
    else:
        raise AssertionError("a wrong password was accepted")


def test_tls_only_and_own_ca(redis_tls: Single) -> None:
    assert redis_tls.client().ping()
    untrusted = redis_tls.node.client(password=redis_tls.password, ssl=True)  # system CAs only
    try:
        untrusted.ping()
    except redis.ConnectionError as exc:
        assert "certificate verify failed" in str(exc)
    else:
        raise AssertionError("a certificate from an unknown CA was trusted")


def test_sentinel_names_the_master(redis_sentinel: SentinelSet) -> None:
    sentinel = Sentinel([("127.0.0.1", s.port) for s in redis_sentinel.sentinels], socket_timeout=5)
    assert sentinel.discover_master(redis_sentinel.service) == ("127.0.0.1", redis_sentinel.master.port)
    master = sentinel.master_for(redis_sentinel.service)
    master.set("farm:sentinel", b"1")
    assert master.get("farm:sentinel") == b"1"
    master.delete("farm:sentinel")
