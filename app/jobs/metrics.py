"""The metrics of batch jobs (registered with the gateway's registry: merged across worker processes as
every other counter): jobs entering each status, lines done by outcome, items the cache served."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

STATUSES = ("validating", "in_progress", "completed", "failed", "cancelled")
KINDS = ("openai", "dashscope")


class JobMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Counter(
            "gateway_jobs_total", "Batch jobs (and DashScope tasks) entering each status", ["kind", "status"],
            registry=registry,
        )  # fmt: skip
        self.lines = Counter(
            "gateway_job_lines_total", "Lines of batch jobs done, by outcome (completed or failed)", ["result"],
            registry=registry,
        )  # fmt: skip
        self.cached = Counter(
            "gateway_job_cached_items_total", "Items of batch jobs served by the cache (not sent upstream)",
            registry=registry,
        )  # fmt: skip
        for kind in KINDS:  # every series exists from the start: dashboards and rates see zeros, not gaps
            for status in STATUSES:
                self.jobs.labels(kind, status)
        for result in ("completed", "failed"):
            self.lines.labels(result)

    def entered(self, kind: str, status: str) -> None:
        self.jobs.labels(kind if kind in KINDS else "openai", status).inc()

    def chunk(self, completed: int, failed: int, cached: int) -> None:
        self.lines.labels("completed").inc(completed)
        self.lines.labels("failed").inc(failed)
        self.cached.inc(cached)
