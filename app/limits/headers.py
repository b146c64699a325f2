"""The rate-limit response headers of a team's admission, as OpenAI sends them."""

from __future__ import annotations

from functools import lru_cache

from .admission import Admission
from .window import US


def rate_headers(adm: Admission) -> list[tuple[bytes, bytes]]:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens} as OpenAI sends them, where the team stands after
    the admission's finish when it had one (else after the admission); reset is when the oldest request of
    the window leaves it (remaining grows then). Made as the answer's head holds them (lower-case names and
    values in bytes: the front layer adds them as they are, front.py)."""
    v = adm.verdict
    if v is None:
        return []
    q = adm.quota
    rpm, tpm = q.rpm, q.tpm
    requests, tokens, reset = adm.usage or (v.requests, v.tokens, v.reset_us)
    reset_text = duration(reset).encode()
    headers: list[tuple[bytes, bytes]] = []
    if rpm is not None:
        headers += (
            (b"x-ratelimit-limit-requests", b"%d" % rpm),
            (b"x-ratelimit-remaining-requests", b"%d" % (rpm - requests) if requests < rpm else b"0"),
            (b"x-ratelimit-reset-requests", reset_text),
        )
    if tpm is not None:
        headers += (
            (b"x-ratelimit-limit-tokens", b"%d" % tpm),
            (b"x-ratelimit-remaining-tokens", b"%d" % (tpm - tokens) if tokens < tpm else b"0"),
            (b"x-ratelimit-reset-tokens", reset_text),
        )
    if v.too_large:
        headers.append((b"x-should-retry", b"false"))
    return headers


def duration(us: int) -> str:
    """OpenAI's style: 250ms, 1.5s, 6m0s (seconds rounded to the millisecond, half to even)."""
    if us <= 0:
        return "0s"
    if us < US:
        return f"{-(-us // 1000)}ms"
    ms, part = divmod(us, 1000)
    if part == 500:  # a tie: rounded as the float us / US rounds it (either way, by its binary value)
        return _seconds(round(round(us / US, 3) * 1000))
    return _seconds(ms + (part > 500))


@lru_cache(maxsize=4096)
def _seconds(ms: int) -> str:
    """A time of at least a second, in whole milliseconds, as `duration` writes it (memoised: a team's reset
    changes by the microsecond, its text by the millisecond)."""
    minutes, rest = divmod(ms, 60_000) if ms >= 60_000 else (0, ms)
    seconds, frac = divmod(rest, 1000)
    text = f"{seconds}s" if not frac else f"{seconds}.{frac:03d}".rstrip("0") + "s"
    return f"{minutes}m{text}" if minutes else text
