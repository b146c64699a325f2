"""Processes of the gateway killed by the kernel's OOM killer, read from its memory cgroup.

The supervisor replaces a worker that dies, so a worker killed for memory leaves no trace in /healthz by
itself, and would be killed again (a memory limit too low for WORKERS, or for the local model). The CLI
counts the cgroup's OOM kills before it starts the workers (OOM_BASELINE_ENV, inherited by them); the
health check fails once the count has grown. In a container the cgroup is the container's own; a count
that cannot be read (no memory controller) is None and never fails a check.
"""

from __future__ import annotations

import os
from pathlib import Path

OOM_BASELINE_ENV = "EMBEDDING_GATEWAY_OOM_KILLS"
CGROUP = Path("/sys/fs/cgroup")


def _candidates() -> list[Path]:
    """memory.events (cgroup v2) or memory.oom_control (v1) of this process's cgroup: by its path in
    /proc/self/cgroup, else at the mount's root (a container sees its own cgroup there)."""
    out = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":
            out.append(CGROUP / rel / "memory.events")
        elif "memory" in controllers.split(","):
            out.append(CGROUP / "memory" / rel / "memory.oom_control")
    return [*out, CGROUP / "memory.events", CGROUP / "memory" / "memory.oom_control"]


def oom_kills() -> int | None:
    for path in _candidates():
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    return None


def mark_start() -> None:
    """Called by the CLI before the workers start: the count they compare with."""
    count = oom_kills()
    if count is not None:
        os.environ[OOM_BASELINE_ENV] = str(count)


_baseline: int | None = None


def killed_since_start() -> int:
    global _baseline
    now = oom_kills()
    if now is None:
        return 0
    if _baseline is None:
        given = os.environ.get(OOM_BASELINE_ENV)
        _baseline = int(given) if given and given.isdigit() else now
    return max(0, now - _baseline)
