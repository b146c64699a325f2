"""The descriptor budget: how many client connections a worker may hold while keeping room for its own
connections (upstream pools, Redis, the media fetcher, log and metric files)."""

from __future__ import annotations

import resource


def raise_nofile() -> int:
    """Raise the soft limit of open descriptors to the hard limit (allowed without privileges) and return
    the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a kernel cap (fs.nr_open) below the hard limit
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else target


def connection_cap(wanted: int, reserve: int, nofile: int | None = None) -> int:
    """`wanted` client connections, fewer when the descriptor limit minus the reserve is lower (at least 1).

    `reserve` counts the descriptors the worker needs besides clients; the listening socket and the
    process's standard streams come on top of it."""
    if nofile is None:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if nofile == resource.RLIM_INFINITY:
            return wanted
    return max(1, min(wanted, nofile - reserve - 16))
