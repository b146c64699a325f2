"""The files of prometheus-client's multiprocess mode (several workers): live gauges of dead workers dropped."""

from __future__ import annotations

import glob
import os
import re

from prometheus_client.multiprocess import mark_process_dead

from .config.settings import MULTIPROC_ENV

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def forget_dead_workers(path: str) -> None:
    """Drop the live gauges (in flight, breaker state) of workers that died without a clean shutdown: a
    restarted worker has a new pid, and its predecessor's last values must not be summed in forever.
    Counters and histograms of dead workers stay: their counts happened."""
    for file in glob.glob(os.path.join(path, "gauge_live*.db")):
        match = _LIVE_GAUGE_FILE.match(os.path.basename(file))
        if match and not _alive(int(match.group(1))):
            mark_process_dead(int(match.group(1)), path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, under another user
    return True


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode when the CLI (or the operator) turned it on, else None."""
    return os.environ.get(MULTIPROC_ENV) or None
