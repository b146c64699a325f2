"""What went wrong with Redis and where, in the operator's words: `cause(exc)` names why a command or the
start failed (authentication, TLS, cluster state, refused, timeout), `place(url)` where (host:port, or the
Sentinel service), never echoing the URL or its password; `sentinel_parts(url)` reads a Sentinel URL."""

from __future__ import annotations

import ssl
from urllib.parse import unquote, urlsplit

from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    ClusterDownError,
    RedisClusterException,
    ResponseError,
)


class RedisSetupError(Exception):
    """Redis could not be opened at start; the message names the cause and the place, never a secret."""


def cause(exc: BaseException) -> str:
    """What went wrong, in the operator's words (never the URL, which may hold a password)."""
    text = str(exc)
    lowered = " ".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None).lower()
    if isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError) or any(
        s in text for s in ("NOAUTH", "WRONGPASS", "invalid password", "invalid username-password")
    ):
        return "authentication failed: wrong or missing password (or user) in the Redis URL"
    if "certificate verify failed" in lowered or isinstance(exc.__cause__, ssl.SSLCertVerificationError):
        return (
            "TLS verification failed: the server's certificate is not trusted "
            "(add ?ssl_ca_certs=FILE to the rediss:// URL for a private CA)"
        )
    if "wrong version number" in lowered or "record layer failure" in lowered or "ssl" in lowered:
        return f"TLS handshake failed (a plain redis:// server reached with rediss://?): {type(exc).__name__}"
    if "closed by server" in lowered or "reset by peer" in lowered:
        return "connection closed by the server (if at start: a TLS-only server reached with redis://?)"
    if isinstance(exc, ClusterDownError) or "CLUSTERDOWN" in text:
        return "cluster misconfiguration: the cluster is down or does not serve every slot (CLUSTERDOWN)"
    if isinstance(exc, ResponseError) and ("MOVED" in text or "CROSSSLOT" in text):
        return "cluster misconfiguration: the server is a cluster node but the gateway uses it as a single server"
    if isinstance(exc, RedisClusterException):
        return f"cluster misconfiguration: {text.splitlines()[0][:200] if text else type(exc).__name__}"
    if "refused" in lowered:
        return "connection refused"
    if isinstance(exc, TimeoutError) or "timeout" in lowered or "timed out" in lowered:
        return "no answer in time"
    return type(exc).__name__


def place(url: str) -> str:
    """host:port (or the Sentinel service) of a Redis URL, for logs: no user, no password."""
    parts = urlsplit(url)
    if parts.scheme.endswith("sentinel"):
        return f"sentinel {parts.netloc.rpartition('@')[2]} service {parts.path.strip('/').split('/')[0]}"
    return f"{parts.hostname}:{parts.port or 6379}"


def sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """redis+sentinel://[:password@]h1:p1[,h2:p2]/service[/db] -> (sentinels, service, db, password)."""
    parts = urlsplit(url)
    creds, _, hosts = parts.netloc.rpartition("@")
    password = unquote(creds.partition(":")[2]) or None if creds else None
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        sentinels.append((name.strip("[]") or "127.0.0.1", int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise RedisSetupError("a redis+sentinel:// URL names its service: redis+sentinel://HOST:PORT/SERVICE/DB")
    return sentinels, path[0], int(path[1]) if len(path) > 1 else 0, password
