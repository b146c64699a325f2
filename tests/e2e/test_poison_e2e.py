"""Poison answers contained, end to end: stand-in upstreams (real processes) answer 200 with a body that
breaks the contract (bench/poison.py); the gateway (a real process) makes one upstream call per deployment
per request, answers a clean 502 naming the defect, logs what was wrong, caches nothing, and its other
models on the same upstream keep working (the breaker stays closed). A model whose upstream default
dimension differs from the catalog's works, because the gateway always sends the dimension."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.poison import POISON_MODES
from tests.support.processes import Gateway, GatewayFactory, RedisServer, StandIn, start_standin, stop
from tests.support.teamkit import write_config

OPENAI = "/v1/embeddings"
TEXT = "/api/v1/services/embeddings/text-embedding/text-embedding"
DEFECT = {
    "wrong_length": "wrong length",
    "wrong_count": "1 vectors for 2 inputs",
    "duplicate_index": "duplicate index",
    "nan": "non-finite",
    "invalid_json": "not JSON",
    "error_200": "error body with status 200",
}


@pytest.fixture(scope="module")
def spare(logdir: Path) -> Iterator[StandIn]:
    s = start_standin(logdir / "standin-spare.log")
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def poison_gw(
    gateways: GatewayFactory,
    redis_server: RedisServer,
    standin_session: StandIn,
    spare: StandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    path = Path(tmp_path_factory.mktemp("poison")) / "gateway.yaml"
    spare_up = {"kind": "dashscope", "base_url": spare.dashscope_base, "api_key_env": "DASHSCOPE_API_KEY"}
    models = {"text-embedding-v3": {"deployments": [{"upstream": "dashscope"}, {"upstream": "spare"}]}}
    write_config(path, {}, upstreams={"spare": spare_up}, models=models)
    gw = gateways.start(redis_url=redis_server.url, config=str(path), env={"BREAKER_FAILURES": "2"})
    yield gw
    stop(gw.proc)


def post(gw: Gateway, model: str, texts: list[str], **extra: Any) -> httpx.Response:
    return gw.post(OPENAI, json={"model": model, "input": texts, **extra}, timeout=30)


def message(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["message"])


@pytest.mark.parametrize("mode", POISON_MODES)
def test_poison_answer_is_contained(poison_gw: Gateway, standin: StandIn, spare: StandIn, mode: str) -> None:
    spare.reset()
    standin.control(poison=mode)
    for _ in range(3):  # more than BREAKER_FAILURES: the breaker would have opened if it counted these
        # New texts each time: a failed call's in-flight entry may outlive its answer by the leases' release,
        # and a request for the same texts then shares its failure (a loaded CI run counted 2 calls for 3).
        texts = [f"poison {mode} {uuid.uuid4().hex}", f"second {uuid.uuid4().hex}"]
        resp = post(poison_gw, "text-embedding-v4", texts)
        assert resp.status_code == 502, resp.text
        assert DEFECT[mode] in message(resp) and "Traceback" not in resp.text
    assert len(standin.calls()) == 3  # one upstream call per request: never retried against it
    assert "broke its contract" in poison_gw.output() and DEFECT[mode] in poison_gw.output()

    standin.control(poison=None)
    assert post(poison_gw, "text-embedding-v3", [f"other model {uuid.uuid4().hex}"]).status_code == 200
    resp = post(poison_gw, "text-embedding-v4", texts)  # nothing was cached: asked again, answered right
    assert resp.status_code == 200 and len(resp.json()["data"]) == 2
    assert len([c for c in standin.calls() if c["model"] == "text-embedding-v4"]) == 4


@pytest.mark.parametrize("mode", ["wrong_length", "error_200"])
def test_poison_from_one_deployment_the_other_serves(
    poison_gw: Gateway, standin: StandIn, spare: StandIn, mode: str
) -> None:
    spare.reset()
    texts = [f"v3 {mode} {uuid.uuid4().hex}", f"v3 second {uuid.uuid4().hex}"]
    standin.control(poison=mode)
    resp = post(poison_gw, "text-embedding-v3", texts)
    assert resp.status_code == 200 and len(resp.json()["data"]) == 2
    assert len(standin.calls()) <= 1 and len(spare.calls()) == 1  # once per deployment at most

    standin.reset()
    spare.reset()
    standin.control(poison=mode)
    spare.control(poison=mode)
    resp = post(poison_gw, "text-embedding-v3", [f"both {uuid.uuid4().hex}", "x"])
    assert resp.status_code == 502 and DEFECT[mode] in message(resp)
    assert len(standin.calls()) == 1 and len(spare.calls()) == 1
    spare.control(poison=None)


def test_the_resolved_dimension_is_always_sent(poison_gw: Gateway, standin: StandIn) -> None:
    """The upstream's own default (1536 here) differs from the catalog's (1024): the gateway sends 1024."""
    standin.control(default_dims={"text-embedding-v4": 1536})
    resp = post(poison_gw, "text-embedding-v4", [f"default dim {uuid.uuid4().hex}"])
    assert resp.status_code == 200 and len(resp.json()["data"][0]["embedding"]) == 1024
    body = {"model": "text-embedding-v4", "input": {"texts": [f"native {uuid.uuid4().hex}"]}}
    resp = poison_gw.post(TEXT, json=body, timeout=30)
    assert resp.status_code == 200 and len(resp.json()["output"]["embeddings"][0]["embedding"]) == 1024
