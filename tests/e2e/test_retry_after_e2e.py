"""Issue 23, item 3 on the wire (the gateway as a process, Redis, team keys, the stand-in): our own 429s
(a team's window, a team's day, the upstream quota's queue) never carry a Retry-After above 60 s, and a
client that waits what it is told and retries gets its answer (or, if the wait was longer, a fresh
Retry-After): the openai SDK, told to retry, gets through a team's rpm 2 after the window's wait."""

from __future__ import annotations

import time
import uuid

import httpx
import numpy as np
import openai
import pytest

from bench.standin import expected_vector
from tests.support.processes import Gateway, GatewayFactory, RedisServer
from tests.support.teamkit import DS_TEXT, OPENAI, write_config

DIM = 64
WINDOW_S = 15.0


@pytest.fixture(scope="module")
def limited(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Gateway, dict[str, str]]:
    config = tmp_path_factory.mktemp("retryafter") / "gateway.yaml"
    teams = {"pair": {"rpm": 2}, "daily": {"daily_tokens": 20}, "wide": {}}
    # The upstream quota of text-embedding-v3: one call a window, no queue (a second call is refused at once).
    # Per-minute windows are WINDOW_S long here, so that the SDK's wait takes seconds, not a minute.
    keys = write_config(
        config, teams, upstream_queue_s=0, models={"text-embedding-v3": {"rpm": 1}}, limits_window_s=WINDOW_S
    )
    gateways.secrets.update(keys.values())
    return gateways.start(redis_url=redis_server.url, config=str(config)), keys


def post(gw: Gateway, key: str, route: str, model: str, text: str) -> httpx.Response:
    body = {"model": model, "input": text} if route == OPENAI else {"model": model, "input": {"texts": [text]}}
    return httpx.post(gw.url + route, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def assert_capped(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["retry-after"]) <= 60 and 1 <= int(r.headers["retry-after-ms"]) <= 60_000, r.headers


@pytest.mark.parametrize("route", [OPENAI, DS_TEXT])
def test_a_day_long_wait_is_said_as_a_minute(limited: tuple[Gateway, dict[str, str]], route: str) -> None:
    gw, keys = limited
    refused = None
    for i in range(5):  # 20 tokens a day: spent within a few requests
        r = post(gw, keys["daily"], route, "text-embedding-v4", f"{i} spending the day's tokens {uuid.uuid4().hex}")
        if r.status_code == 429:
            refused = r
            break
        assert r.status_code == 200, r.text
    assert refused is not None
    assert_capped(refused)
    assert refused.headers["retry-after"] == "60"  # the real wait is until midnight UTC


@pytest.mark.parametrize("route", [OPENAI, DS_TEXT])
def test_the_upstream_queue_s_refusal_is_at_most_a_minute(limited: tuple[Gateway, dict[str, str]], route: str) -> None:
    gw, keys = limited
    first = post(gw, keys["wide"], route, "text-embedding-v3", f"first {uuid.uuid4().hex}")
    assert first.status_code in (200, 429), first.text  # 429: the other route's call holds this minute's slot
    assert_capped(post(gw, keys["wide"], route, "text-embedding-v3", f"second {uuid.uuid4().hex}"))


def test_the_openai_sdk_waits_retry_after_and_gets_through_rpm_2(limited: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = limited
    refusals: list[httpx.Response] = []

    def seen(r: httpx.Response) -> None:
        if r.status_code == 429:
            refusals.append(r)

    http = httpx.Client(event_hooks={"response": [seen]}, timeout=30)
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=keys["pair"], max_retries=3, http_client=http)
    for i in range(2):
        sdk.embeddings.create(model="text-embedding-v4", input=f"{i} {uuid.uuid4().hex}", dimensions=DIM)
    text = f"third {uuid.uuid4().hex}"
    t0 = time.monotonic()
    third = sdk.embeddings.create(model="text-embedding-v4", input=text, dimensions=DIM)
    took = time.monotonic() - t0
    np.testing.assert_array_equal(
        np.asarray(third.data[0].embedding, dtype=np.float32), expected_vector("text-embedding-v4", DIM, text)
    )
    assert refusals, "the third call within the minute is refused first"
    for r in refusals:
        assert_capped(r)
    # The window frees room at most WINDOW_S + 1 s after the first call: the SDK's waits (each what it was
    # told) get there.
    assert took <= WINDOW_S + 2 + 2 * len(refusals), (took, [r.headers["retry-after"] for r in refusals])
