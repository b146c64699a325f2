"""Issue 23, item 1: a team moving from DashScope's OpenAI-compatible mode changes only the host.
`/compatible-mode/v1/embeddings`, `/compatible-mode/v1/models` and `/compatible-mode/v1/models/{id}` are the
/v1 routes (the gateway as a process, Redis, team keys, the stand-in upstream): exact vectors for the openai
SDK, the same cache entries, the same keys and limits, the same metrics; an unknown route under a known
prefix gets a 404 that lists the routes there."""

from __future__ import annotations

import uuid

import httpx
import numpy as np
import openai
import pytest

from bench.standin import canonical_digest, expected_vector
from tests.support.processes import Gateway, GatewayFactory, RedisServer, StandIn
from tests.support.teamkit import write_config

MODEL, DIM = "text-embedding-v4", 64


@pytest.fixture(scope="module")
def compat(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Gateway, dict[str, str]]:
    config = tmp_path_factory.mktemp("compatmode") / "gateway.yaml"
    keys = write_config(config, {"wide": {}, "slow": {"rpm": 1}}, limits_window_s=30)
    gateways.secrets.update(keys.values())
    return gateways.start(redis_url=redis_server.url, config=str(config)), keys


def client(gw: Gateway, key: str, base: str = "/compatible-mode/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + base, api_key=key, max_retries=0)


def requests_of(gw: Gateway, route: str, team: str) -> float:
    lines = httpx.get(gw.url + "/metrics").text.splitlines()
    labels = (f'route="{route}"', f'team="{team}"', 'status_class="2xx"')
    rows = [x for x in lines if x.startswith("gateway_requests_total{") and all(lb in x for lb in labels)]
    return sum(float(x.rsplit(" ", 1)[1]) for x in rows)


def test_the_openai_sdk_on_compatible_mode_gets_exact_vectors_from_the_v1_cache(
    compat: tuple[Gateway, dict[str, str]], standin: StandIn
) -> None:
    gw, keys = compat
    texts = [f"compatible {i} {uuid.uuid4().hex}" for i in range(3)]
    counted = requests_of(gw, "openai", "wide")
    sdk = client(gw, keys["wide"])
    as_b64 = sdk.embeddings.with_raw_response.create(model=MODEL, input=texts, dimensions=DIM)
    floats = sdk.embeddings.create(model=MODEL, input=texts[0], dimensions=DIM, encoding_format="float")
    assert as_b64.headers["x-cache-misses"] == "3"
    for row, text in zip(as_b64.parse().data, texts, strict=True):
        np.testing.assert_array_equal(np.asarray(row.embedding, dtype=np.float32), expected_vector(MODEL, DIM, text))
    np.testing.assert_array_equal(
        np.asarray(floats.data[0].embedding, dtype=np.float32), expected_vector(MODEL, DIM, texts[0])
    )
    on_v1 = client(gw, keys["wide"], "/v1").embeddings.with_raw_response.create(
        model=MODEL, input=texts, dimensions=DIM
    )
    assert on_v1.headers["x-cache-hits"] == "3"  # one cache: the same entries
    assert sorted(standin.digests()) == sorted(canonical_digest(MODEL, DIM, t) for t in texts)
    assert requests_of(gw, "openai", "wide") == counted + 3  # the same route in the metrics


def test_models_on_compatible_mode_are_the_v1_models(compat: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = compat
    sdk, v1 = client(gw, keys["wide"]), client(gw, keys["wide"], "/v1")
    assert [m.model_dump() for m in sdk.models.list()] == [m.model_dump() for m in v1.models.list()]
    assert sdk.models.retrieve(MODEL).model_dump() == v1.models.retrieve(MODEL).model_dump()
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


def test_compatible_mode_has_the_same_keys_and_limits(compat: tuple[Gateway, dict[str, str]]) -> None:
    gw, keys = compat
    with pytest.raises(openai.AuthenticationError):
        client(gw, "sk-not-a-key").embeddings.create(model=MODEL, input="x", dimensions=DIM)
    r = httpx.post(gw.url + "/compatible-mode/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    client(gw, keys["slow"], "/v1").embeddings.create(model=MODEL, input=f"a {uuid.uuid4().hex}", dimensions=DIM)
    with pytest.raises(openai.RateLimitError) as refused:  # rpm 1: the /v1 call spent it
        client(gw, keys["slow"]).embeddings.create(model=MODEL, input=f"b {uuid.uuid4().hex}", dimensions=DIM)
    assert 0 < int(refused.value.response.headers["retry-after"]) <= 60


@pytest.mark.parametrize(
    ("method", "path", "hint"),
    [
        ("POST", "/compatible-mode/v1/chat/completions", "POST /compatible-mode/v1/embeddings"),
        ("GET", "/compatible-mode/api/v1/models", "under /compatible-mode/v1"),
        ("POST", "/v1/embedding", "POST /v1/embeddings"),
        ("POST", "/api/v1/services/embeddings/text-embedding", "text-embedding/text-embedding"),
    ],
)
def test_an_unknown_route_under_a_known_prefix_says_what_is_there(
    compat: tuple[Gateway, dict[str, str]], method: str, path: str, hint: str
) -> None:
    gw, keys = compat
    r = httpx.request(method, gw.url + path, headers={"Authorization": f"Bearer {keys['wide']}"}, json={})
    assert r.status_code == 404, r.text
    message = r.json()["message"] if path.startswith("/api/") else r.json()["error"]["message"]
    assert message.startswith(f"no route {method} {path}") and hint in message, message
