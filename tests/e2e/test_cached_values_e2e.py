"""Issue 19, item 6 on the wire: a vector in the shared Redis cache that holds NaN (the right length) is a miss
for a gateway process (hot cache on, auth on, team key): the openai SDK gets the stand-in's exact vector, as
base64 and as floats, the entry in Redis is overwritten with it, and the refusal is counted."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from openai import OpenAI

from bench.standin import canonical_digest, expected_vector
from tests.support.polling import eventually
from tests.support.processes import Gateway, GatewayFactory, RedisServer, StandIn
from tests.support.teamkit import write_config

MODEL, DIM = "text-embedding-v4", 64


def metric(gw: Gateway, name: str, **labels: str) -> float:
    text = httpx.get(gw.url + "/metrics").text
    rows = [line for line in text.splitlines() if line.startswith(name + "{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in rows if all(f'{k}="{v}"' in line for k, v in labels.items()))


@pytest.fixture(scope="module")
def pair(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Gateway, Gateway, str, str]:
    """Two gateway processes on one Redis and one cache namespace (the first writes, the second reads)."""
    config: Path = tmp_path_factory.mktemp("poison") / "gateway.yaml"
    keys = write_config(config, {"team": {}})
    gateways.secrets.update(keys.values())
    first, second = (gateways.start(redis_url=redis_server.url, config=str(config)) for _ in range(2))
    return first, second, keys["team"], redis_server.url


def only_vector_key(r: redis.Redis, text_marker: str, before: set[bytes]) -> bytes:
    new = [k for k in r.scan_iter(count=1000) if k not in before]
    found = [k for k in new if r.type(k) == b"string" and r.strlen(k) == 4 * DIM]  # not a fetch's lease
    assert len(found) == 1, (text_marker, new)
    return found[0]


@pytest.mark.parametrize("encoding", ["base64", "float"])
def test_a_nan_vector_in_redis_is_fetched_again_overwritten_and_never_served(
    pair: tuple[Gateway, Gateway, str, str], standin: StandIn, encoding: str
) -> None:
    first, second, key, url = pair
    r = redis.Redis.from_url(url)
    text = f"poisoned {uuid.uuid4().hex}"
    want = expected_vector(MODEL, DIM, text)
    before = set(r.scan_iter(count=1000))
    OpenAI(base_url=first.url + "/v1", api_key=key).embeddings.create(model=MODEL, input=text, dimensions=DIM)
    # The vector is written to Redis once the upstream call lands, which may be just after the answer.
    entry = eventually(lambda: only_vector_key(r, text, before), what="the vector written to Redis")
    assert r.get(entry) == want.tobytes()
    bad = want.copy()
    bad[3] = np.nan
    r.set(entry, bad.tobytes(), keepttl=True)  # the right length, one NaN
    counted = metric(second, "gateway_cache_invalid_total", reason="non_finite")
    standin.reset()

    client = OpenAI(base_url=second.url + "/v1", api_key=key)
    # The SDK's default asks for base64 (and decodes it); "float" asks for JSON numbers.
    extra = {"encoding_format": "float"} if encoding == "float" else {}
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=text, dimensions=DIM, **extra)  # type: ignore[arg-type]
    got = np.asarray(raw.parse().data[0].embedding, dtype=np.float32)
    np.testing.assert_array_equal(got, want)
    assert raw.headers["x-cache-misses"] == "1"
    assert standin.digests() == [canonical_digest(MODEL, DIM, text)]  # fetched again
    # and overwritten: written once the upstream call lands, which may be just after the answer (CI at load 14)
    eventually(lambda: r.get(entry) == want.tobytes(), what="the NaN vector overwritten in Redis")
    assert metric(second, "gateway_cache_invalid_total", reason="non_finite") > counted

    again = client.embeddings.with_raw_response.create(model=MODEL, input=text, dimensions=DIM)
    assert again.headers["x-cache-hits"] == "1" and len(standin.digests()) == 1
    np.testing.assert_array_equal(np.asarray(again.parse().data[0].embedding, dtype=np.float32), want)
