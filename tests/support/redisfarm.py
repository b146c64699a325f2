"""Real Redis deployments for the tests, each in its own temporary folder and stopped afterwards: a Redis
Cluster (3 masters + 3 replicas), a Redis with a password, a Redis that speaks only TLS (a self-signed CA
made here with openssl), and a Redis behind Sentinel.

Every process listens on loopback. Cluster nodes need ports at or below 55535 (the cluster bus listens on
port + 10000), so ports come from a low range, each checked free together with its bus port.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import redis

from bench.procs import stop

PASSWORD = "farm-secret-0123456789"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run the README's test command (bash scripts/test.sh), which installs it")
    return path


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def low_ports(n: int, bus: bool = True) -> list[int]:
    """`n` free loopback ports in 20000-45535 whose bus port (+10000) is free too."""
    picked: list[int] = []
    while len(picked) < n:
        port = random.randint(20000, 45535)
        if port in picked or not _free(port) or (bus and not _free(port + 10000)):
            continue
        picked.append(port)
    return picked


def wait_client(client: redis.Redis, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"redis process exited with {proc.returncode}")
        try:
            if client.ping():
                return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


@dataclass
class Node:
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **kw)  # type: ignore[arg-type]

    def kill(self) -> None:
        stop(self.proc, timeout=5)


def start_node(workdir: Path, port: int, *extra: str, tls: bool = False) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    listen = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
    args = [binary("redis-server"), *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), "--logfile", str(workdir / "redis.log"), *extra]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class Cluster:
    nodes: list[Node]
    workdir: Path

    @property
    def url(self) -> str:
        """A plain redis:// URL of one node, as an operator would give it."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=5)

    def roles(self) -> dict[int, str]:
        """port -> 'master' or 'slave', as the nodes see themselves."""
        out = {}
        for node in self.nodes:
            if node.proc.poll() is None:
                out[node.port] = node.client().info("replication")["role"]
        return out

    def replica_of(self, master: Node) -> Node:
        for node in self.nodes:
            if node.proc.poll() is None and node is not master:
                info = node.client().info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == master.port:
                    return node
        raise LookupError(f"no replica of {master.port}")

    def masters(self) -> list[Node]:
        roles = self.roles()
        return [n for n in self.nodes if roles.get(n.port) == "master"]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and all 16384 slots are served."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [n.client().cluster("info") for n in self.nodes if n.proc.poll() is None]
            if all(s.get("cluster_state") == "ok" and int(s.get("cluster_slots_ok", 0)) == 16384 for s in states):
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster did not become ok")

    def close(self) -> None:
        for node in self.nodes:
            stop(node.proc, timeout=5)


def start_cluster(workdir: Path, masters: int = 3, replicas: int = 1) -> Cluster:
    count = masters * (1 + replicas)
    nodes = []
    try:
        for port in low_ports(count):
            d = workdir / str(port)
            proc = start_node(
                d,
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(d / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            )
            nodes.append(Node(port, proc, d))
        for node in nodes:
            wait_client(node.client(), node.proc)
        addrs = [f"127.0.0.1:{n.port}" for n in nodes]
        subprocess.run(
            [binary("redis-cli"), "--cluster", "create", *addrs, "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        cluster = Cluster(nodes, workdir)
        cluster.wait_ok()
        _wait_replicas_synced(cluster, masters * replicas)
        return cluster
    except BaseException:
        for node in nodes:
            stop(node.proc, timeout=5)
        raise


def _wait_replicas_synced(cluster: Cluster, want: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        synced = 0
        for node in cluster.nodes:
            info = node.client().info("replication")
            if info["role"] == "slave" and info.get("master_link_status") == "up":
                synced += 1
        if synced >= want:
            return
        time.sleep(0.1)
    raise RuntimeError("the cluster's replicas did not sync")


@dataclass
class Single:
    """One redis-server with a password, or TLS-only, or both."""

    node: Node
    password: str | None = None
    ca: Path | None = None  # the CA that signed the server's certificate (TLS only)
    extra_files: dict[str, Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        scheme = "rediss" if self.ca else "redis"
        auth = f":{self.password}@" if self.password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.node.port}/0"

    def client(self) -> redis.Redis:
        kw: dict[str, object] = {"password": self.password}
        if self.ca:
            kw.update(ssl=True, ssl_ca_certs=str(self.ca))
        return self.node.client(**kw)

    def close(self) -> None:
        self.node.kill()


def start_password(workdir: Path, password: str = PASSWORD) -> Single:
    (port,) = low_ports(1, bus=False)
    proc = start_node(workdir, port, "--requirepass", password)
    single = Single(Node(port, proc, workdir), password=password)
    wait_client(single.client(), proc)
    return single


def openssl(*args: str) -> None:
    subprocess.run([binary("openssl"), *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_ca(workdir: Path, name: str = "farm") -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    cert, key = workdir / f"{name}-ca.crt", workdir / f"{name}-ca.key"
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "2",
        "-subj",
        f"/CN={name} test CA",
    )
    return cert, key


def make_server_cert(workdir: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 (subjectAltName IP and DNS localhost) signed by `ca`."""
    key, csr, cert = workdir / "server.key", workdir / "server.csr", workdir / "server.crt"
    ext = workdir / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return cert, key


def start_tls(workdir: Path, password: str | None = None) -> Single:
    """A Redis listening only on TLS, its certificate signed by a CA made here; clients need no certificate."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca = make_ca(workdir)
    cert, key = make_server_cert(workdir, ca)
    (port,) = low_ports(1, bus=False)
    extra = ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca[0])]
    extra += ["--tls-auth-clients", "no"]
    if password:
        extra += ["--requirepass", password]
    proc = start_node(workdir, port, *extra, tls=True)
    single = Single(Node(port, proc, workdir), password=password, ca=ca[0])
    wait_client(single.client(), proc)
    return single


@dataclass
class SentinelSet:
    service: str
    master: Node
    replica: Node
    sentinels: list[Node]

    @property
    def url(self) -> str:
        """The redis+sentinel:// form: every sentinel, then the service name and the database."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def close(self) -> None:
        for node in [*self.sentinels, self.replica, self.master]:
            stop(node.proc, timeout=5)


def start_sentinel(workdir: Path, service: str = "farm", count: int = 1) -> SentinelSet:
    """A master, one replica and `count` sentinels watching them (redis-server --sentinel)."""
    ports = low_ports(2 + count, bus=False)
    started: list[Node] = []
    try:
        master = Node(ports[0], start_node(workdir / "master", ports[0]), workdir / "master")
        started.append(master)
        replica_dir = workdir / "replica"
        replica = Node(
            ports[1], start_node(replica_dir, ports[1], "--replicaof", "127.0.0.1", str(ports[0])), replica_dir
        )
        started.append(replica)
        wait_client(master.client(), master.proc)
        wait_client(replica.client(), replica.proc)
        sentinels = []
        for port in ports[2:]:
            d = workdir / f"sentinel-{port}"
            d.mkdir(parents=True)
            conf = d / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {d}\nlogfile {d / 'sentinel.log'}\n"
                f"sentinel monitor {service} 127.0.0.1 {ports[0]} 1\n"
                f"sentinel down-after-milliseconds {service} 1000\n"
                f"sentinel failover-timeout {service} 5000\n"
            )
            proc = subprocess.Popen(
                [binary("redis-server"), str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            node = Node(port, proc, d)
            started.append(node)
            sentinels.append(node)
            wait_client(node.client(), proc)
        _wait_sentinel_sees(sentinels, service, ports[0])
        return SentinelSet(service, master, replica, sentinels)
    except BaseException:
        for node in started:
            stop(node.proc, timeout=5)
        raise


def _wait_sentinel_sees(sentinels: Sequence[Node], service: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        addrs = [s.client().execute_command("SENTINEL", "get-master-addr-by-name", service) for s in sentinels]
        if all(a and int(a[1]) == port for a in addrs):
            return
        time.sleep(0.1)
    raise RuntimeError("sentinel does not see the master")


def farm_fixtures(scope: Literal["module", "session"]) -> tuple[Any, Any, Any, Any]:
    """The fixtures redis_cluster, redis_password, redis_tls and redis_sentinel, each living for `scope`:
    per module here (tests/e2e kills nodes), per session for tests/redis (its conftest), which only reads."""

    @pytest.fixture(scope=scope)
    def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
        cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
        yield cluster
        cluster.close()

    @pytest.fixture(scope=scope)
    def redis_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Single]:
        single = start_password(tmp_path_factory.mktemp("redis-password"))
        yield single
        single.close()

    @pytest.fixture(scope=scope)
    def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Single]:
        single = start_tls(tmp_path_factory.mktemp("redis-tls"), password=PASSWORD)
        yield single
        single.close()

    @pytest.fixture(scope=scope)
    def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
        s = start_sentinel(tmp_path_factory.mktemp("redis-sentinel"))
        yield s
        s.close()

    return redis_cluster, redis_password, redis_tls, redis_sentinel


redis_cluster, redis_password, redis_tls, redis_sentinel = farm_fixtures("module")
