"""Issue 23, item 3: our Retry-After is never above 60 s (LangChain JS gives up at once on a longer one),
in both wire formats, whatever the wait behind it; shorter waits keep their exact, rounded-up value."""

from __future__ import annotations

import pytest

from app.api.rendering import MAX_RETRY_AFTER_S, Wire, render
from app.errors import RateLimited, Unavailable
from app.limits.window import US, TeamQuota, TeamWindow, admit


@pytest.mark.parametrize("wire", list(Wire))
@pytest.mark.parametrize(
    ("wait_s", "header", "ms"),
    [(0.2, "1", "200"), (59.2, "60", "59200"), (60.0, "60", "60000"), (60.9, "60", "60000"), (86_399.0, "60", "60000")],
)
def test_retry_after_is_rounded_up_and_at_most_a_minute(wire: Wire, wait_s: float, header: str, ms: str) -> None:
    for err in (RateLimited("slow down", retry_after=wait_s), Unavailable("later", retry_after=wait_s)):
        r = render(err, wire, "rid")
        assert (r.headers["retry-after"], r.headers["retry-after-ms"]) == (header, ms)
    assert MAX_RETRY_AFTER_S == 60


def test_a_minute_window_in_second_buckets_can_ask_for_more_than_60_s() -> None:
    """Why the cap is needed: two requests early in a bucket, the third refused in the same bucket must wait
    until that bucket leaves the window, up to a window plus a bucket (61 s) later."""
    w, q, window = TeamWindow(), TeamQuota(rpm=2), 60 * US
    for i in range(2):
        assert admit(w, q, now=10 * US + i, window=window, lease=US, est=0, rid=f"r{i}").ok
    refused = admit(w, q, now=10 * US + 2, window=window, lease=US, est=0, rid="r2")
    assert not refused.ok and refused.retry_us > 60 * US
    said = render(RateLimited("x", retry_after=refused.retry_us / US), Wire.OPENAI, "rid")
    assert said.headers["retry-after"] == "60"
