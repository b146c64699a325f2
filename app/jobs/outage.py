"""Outage: the batch jobs' Redis failing, logged as one line per change of state (down with its cause, then
up again), never a traceback or the URL. saq's worker logs every failed upkeep round with its traceback
(`logger.exception`); as a filter on the "saq" logger it turns the first such record of an outage into one
line naming the cause and drops the repeats."""

from __future__ import annotations

import logging

from ..redis.cause import cause
from ..redis.link import FAILURES

log = logging.getLogger("embedding_gateway.jobs")


class Outage(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.cause: str | None = None  # None while Redis answers

    def failed(self, exc: BaseException) -> bool:
        """Note a failure; True when it starts an outage (or changes its cause): that one is logged."""
        why = cause(exc)
        if why == self.cause:
            return False
        self.cause = why
        return True

    def answered(self) -> None:
        if self.cause is not None:
            self.cause = None
            log.info("batch jobs: Redis answers again")

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, FAILURES):
            return True
        if not self.failed(exc):
            return False
        record.msg, record.args = "batch jobs: Redis failed: %s (%s)", (self.cause, _what(record.getMessage()))
        record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.WARNING, "WARNING"
        return True


def _what(message: str) -> str:
    """saq's line about the failure, without the job's recorded error (its traceback) and at most 300
    characters: "Error processing job Job<function: run_batch, kwargs: {...}, ..., error: Traceback ...>"."""
    return message.split(", error:", 1)[0].splitlines()[0][:300]
