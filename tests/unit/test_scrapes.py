"""/metrics rendered in a burst of BURST, then at most every RENDER_EVERY_S (app/api/scrapes.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from app.api.scrapes import BURST, RENDER_EVERY_S, Scrapes
from app.metrics import Metrics

COUNTED = b'gateway_ratelimit_rejections_total{limit="management",team="anonymous"} %d.0'


def test_scrapes_past_the_burst_get_the_last_rendering_until_the_next_is_due() -> None:
    now = [100.0]
    metrics = Metrics(CollectorRegistry())
    scrapes = Scrapes(clock=lambda: now[0])
    count = metrics.ratelimit_rejections.labels("anonymous", "management")
    for n in range(int(BURST)):  # a burst: each fresh
        count.inc()
        body, content_type = scrapes.answer(metrics, "")
        assert COUNTED % (n + 1) in body and content_type.startswith("text/plain")
    count.inc()
    assert scrapes.answer(metrics, "text/plain") == (body, content_type)  # past the burst: the last one
    now[0] += RENDER_EVERY_S / 2
    assert scrapes.answer(metrics, "") == (body, content_type)
    now[0] += RENDER_EVERY_S / 2 + 0.001
    assert COUNTED % (BURST + 1) in scrapes.answer(metrics, "")[0]  # one more is due
    assert scrapes.answer(metrics, "")[0] != body and scrapes.renders < 1
    now[0] += 60  # an idle minute: a burst again, not 600 renders
    for _ in range(int(BURST)):
        count.inc()
        assert COUNTED % count._value.get() in scrapes.answer(metrics, "")[0]
    count.inc()
    assert COUNTED % count._value.get() not in scrapes.answer(metrics, "")[0]
