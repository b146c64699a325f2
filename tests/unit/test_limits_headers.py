"""The rate-limit headers' reset text (app/limits/headers.py): seconds rounded to the millisecond on integers,
memoised by the millisecond, written exactly as the float formula OpenAI's style was first written with."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.limits.headers import duration
from app.limits.window import US


def reference(us: int) -> str:
    """The float formula: round(us / US, 3) written with :g (and minutes past 60 s)."""
    if us <= 0:
        return "0s"
    if us < US:
        return f"{-(-us // 1000)}ms"
    seconds = round(us / US, 3)
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


@given(st.integers(min_value=-US, max_value=4000 * US))
def test_duration_is_the_float_formulas_text(us: int) -> None:
    assert duration(us) == reference(us)


@given(st.integers(min_value=0, max_value=4_000_000))
def test_duration_rounds_a_half_millisecond_as_the_float_does(ms: int) -> None:
    us = ms * 1000 + 500
    assert duration(us) == reference(us)


def test_duration_around_its_edges() -> None:
    for us in [*range(0, 2_000_000, 97), *range(59_990_000, 60_010_000, 7), *range(119_999_000, 120_001_000)]:
        assert duration(us) == reference(us), us
    assert [duration(u) for u in (250_000, 1_500_000, 12_500_000, 60_000_000, 360_000_000)] == [
        "250ms", "1.5s", "12.5s", "1m0s", "6m0s"
    ]  # fmt: skip
