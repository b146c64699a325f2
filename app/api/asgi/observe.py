"""What the front layer (front.py) observes of every request: its id, the in-flight gauge, duration and
count metrics, and one JSON log line (never inputs, vectors or keys).

The route fills the request's Exchange (exchange.py): the team (also the metrics' label), the response
headers it adds, and the fields of the log line; the front layer its status.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

from starlette.types import Scope

from ...metrics import ANONYMOUS, Metrics
from ..routes import METRIC_ROUTES
from .accesslog import AccessLog
from .exchange import Exchange

ROUTES = METRIC_ROUTES  # any other path is counted and logged as route "other"; QUIET ones neither
OTHER_ROUTE = "other"
STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx"}  # anything else counts as 5xx
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIds:
    """New request ids: 32 hex digits, a random prefix per process then a counter (unique without asking
    the OS for randomness on every request, as uuid4 does)."""

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self, scope: Scope) -> str:
        """The caller's x-request-id when it is a safe token (letters, digits, `._:-`, up to 128), else a new
        one."""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate: str = value.decode("latin-1")
                if _SAFE_ID.match(candidate):
                    return candidate
                break
        return f"{self.prefix}{next(self.counter):016x}"


class Observer:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.request_id = RequestIds()
        self.access_log = AccessLog()
        # prometheus-client keeps no exemplar in multiprocess mode (several workers): none is made then.
        self.exemplars = metrics.multiprocess_dir is None
        metrics.init_routes(route for route in ROUTES.values() if route != "models")

    def begin(self) -> None:
        m = self.metrics
        m.tally.inc(m.in_flight)  # applied per loop turn, or at the scrape (runtime/tally.py)

    def end(self, route: str, exchange: Exchange, elapsed: float) -> None:
        """The request's metrics and log line; its lease on the memory budget and its desk given back."""
        m = self.metrics
        tally = m.tally
        tally.inc(m.in_flight, -1)
        if exchange.lease is not None:  # the bytes the request held from the memory budget (app/runtime/budget.py)
            exchange.lease.release()
        if exchange.desk is not None:  # its place among its team's (app/limits/desks.py)
            exchange.desk()
        team = exchange.team
        status = exchange.status
        tally.inc(m.child(m.requests, route, STATUS_CLASS.get(status // 100, "5xx"), m.team(team)))
        if exchange.sampled and self.exemplars:  # the trace of this observation (app/telemetry/incoming.py)
            m.child(m.request_duration, route).observe(elapsed, {"trace_id": exchange.trace_id or ""})
        else:
            tally.observe(m.child(m.request_duration, route), elapsed)
        tally.observe(m.child(m.overhead, route), max(0.0, elapsed - exchange.upstream_s))
        if self.access_log.enabled:
            line: dict[str, Any] = {
                "request_id": exchange.request_id,
                "route": route,
                "status": status,
                "duration_s": round(elapsed, 6),
            }
            exchange.log_fields(line)
            line["team"] = team or ANONYMOUS
            self.access_log.write(line)
