"""The rate-limit response headers of a team's admission, as OpenAI sends them."""

from __future__ import annotations

from .admission import Admission
from .window import US


def rate_headers(adm: Admission) -> dict[str, str]:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens} as OpenAI sends them, where the team stands after
    the admission's finish when it had one (else after the admission); reset is when the oldest request of
    the window leaves it (remaining grows then)."""
    v, q = adm.verdict, adm.quota
    if v is None:
        return {}
    requests, tokens, reset = adm.usage or (v.requests, v.tokens, v.reset_us)
    headers: dict[str, str] = {}
    for kind, limit, used in (("requests", q.rpm, requests), ("tokens", q.tpm, tokens)):
        if limit is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, limit - used))
            headers[f"x-ratelimit-reset-{kind}"] = duration(reset)
    if v.too_large:
        headers["x-should-retry"] = "false"
    return headers


def duration(us: int) -> str:
    """OpenAI's style: 250ms, 1.5s, 6m0s."""
    if us <= 0:
        return "0s"
    if us < US:
        return f"{-(-us // 1000)}ms"
    seconds = round(us / US, 3)
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"
