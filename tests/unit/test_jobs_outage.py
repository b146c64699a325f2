"""Outage: saq's Redis failures, logged with tracebacks every round, become one line per outage naming the
cause (never a traceback); other records pass untouched."""

from __future__ import annotations

import logging
import sys

import pytest
from redis.exceptions import AuthenticationError, ConnectionError

from app.jobs.outage import Outage


def failure(exc: BaseException, message: str = "Upkeep task failed unexpectedly") -> logging.LogRecord:
    try:
        raise exc
    except type(exc):
        return logging.LogRecord("saq", logging.ERROR, __file__, 1, message, (), sys.exc_info())


def test_one_line_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage()
    first = failure(ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."))
    assert outage.filter(first)
    assert first.exc_info is None and first.levelno == logging.WARNING
    assert first.getMessage() == "batch jobs: Redis failed: connection refused (Upkeep task failed unexpectedly)"
    assert not outage.filter(failure(ConnectionError("Error 111 connecting. Connection refused.")))
    changed = failure(AuthenticationError("WRONGPASS invalid username-password pair"))
    assert outage.filter(changed) and "authentication failed" in changed.getMessage()
    with caplog.at_level(logging.INFO, logger="embedding_gateway.jobs"):
        outage.answered()
        outage.answered()
    assert [r.getMessage() for r in caplog.records] == ["batch jobs: Redis answers again"]
    assert outage.filter(failure(ConnectionError("Connection refused.")))  # a new outage: logged again


def test_other_records_pass() -> None:
    outage = Outage()
    plain = logging.LogRecord("saq", logging.INFO, __file__, 1, "Worker starting", (), None)
    assert outage.filter(plain) and plain.getMessage() == "Worker starting"
    bug = failure(ValueError("a bug"), "Error processing job")
    assert outage.filter(bug) and bug.exc_info is not None  # not Redis: saq's traceback stays


def test_a_failed_job_s_line_keeps_saq_s_words_but_not_the_job_s_traceback() -> None:
    saq_line = (
        "Error processing job Job<function: run_batch, kwargs: {'bid': 'batch_1'}, queue: ns:jobs, attempts: 2, "
        'error: Traceback (most recent call last):\n  File "/srv/app/jobs/worker.py", line 115, in _run\n'
        "redis.exceptions.ConnectionError: Connection refused., status: active>"
    )
    record = failure(ConnectionError("Connection refused."), saq_line)
    assert Outage().filter(record)
    line = record.getMessage()
    assert line == (
        "batch jobs: Redis failed: connection refused (Error processing job Job<function: run_batch, "
        "kwargs: {'bid': 'batch_1'}, queue: ns:jobs, attempts: 2)"
    )
    assert "Traceback" not in line and "\n" not in line
