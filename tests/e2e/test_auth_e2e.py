"""Teams and API keys, end to end: keys made by the CLI, only their hashes in the config, a gateway process
with auth required, called with the official openai and dashscope clients and with raw HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dashscope
import httpx
import openai
import pytest
import yaml

from app.teams.keys import auth_off_warning, hash_key, new_key, presented_key
from tests.support.processes import ROOT, Gateway, GatewayFactory, RedisServer, StandIn, clean_env, stop
from tests.support.teamkit import DS_TEXT, OPENAI


def create_key(team: str, config: Path | None = None) -> tuple[str, str, str]:
    """`embedding-gateway create-key`: (key printed on stdout, hash printed on stderr, stderr)."""
    args = [sys.executable, "-m", "app.cli", "create-key", "--team", team]
    if config is not None:
        args += ["--config", str(config)]
    done = subprocess.run(args, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60, check=True)
    key = done.stdout.strip()
    digest = next(w.strip('"') for w in done.stderr.split() if w.strip('"').startswith("sha256:"))
    return key, digest, done.stderr


@dataclass
class Keyed:
    gw: Gateway
    config: Path
    alpha: str
    beta: str
    used: list[str]  # every key string sent in these tests, valid or not


@pytest.fixture(scope="module")
def keyed(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Keyed]:
    config = Path(tmp_path_factory.mktemp("auth")) / "gateway.yaml"
    alpha, alpha_hash, note = create_key("alpha")
    beta, beta_hash, _ = create_key("beta")
    assert alpha.startswith("eg-") and len(alpha) > 40 and alpha_hash == hash_key(alpha)
    assert alpha not in note  # the key goes to stdout only, once
    config.write_text(
        yaml.safe_dump(
            {
                "cache_namespace": "auth",
                "teams": {
                    "alpha": {"keys": [alpha_hash], "models": ["text-embedding-v4"], "rpm": 1000},
                    "beta": {"keys": [beta_hash]},
                },
            }
        )
    )
    gw = gateways.start(redis_url=redis_server.url, config=str(config))
    yield Keyed(gw, config, alpha, beta, [alpha, beta])
    stop(gw.proc)


def post(k: Keyed, path: str, body: dict[str, object], headers: dict[str, str]) -> httpx.Response:
    for v in headers.values():
        k.used.append(v.removeprefix("Bearer "))
    return httpx.post(k.gw.url + path, json=body, headers=headers, timeout=30)


OPENAI_BODY = {"model": "text-embedding-v4", "input": "hello", "dimensions": 64}
DS_BODY = {"model": "text-embedding-v4", "input": {"texts": ["hello"]}, "parameters": {"dimension": 64}}


def test_keys_are_checked_on_every_embedding_route(keyed: Keyed, standin: StandIn) -> None:
    k = keyed
    changed = k.alpha[:-1] + ("A" if k.alpha[-1] != "A" else "B")
    for headers in (
        {},
        {"Authorization": f"Bearer {new_key()}"},
        {"Authorization": f"Bearer {changed}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {k.alpha}"},
    ):
        r = post(k, OPENAI, OPENAI_BODY, headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["type"] == "authentication_error"
        r = post(k, DS_TEXT, DS_BODY, headers)
        assert r.status_code == 401 and r.json()["code"] == "InvalidApiKey"
    r = post(k, DS_TEXT, DS_BODY, {"X-DashScope-ApiKey": changed})
    assert r.status_code == 401 and r.json()["code"] == "InvalidApiKey"
    assert standin.calls() == []  # nothing refused reached the upstream

    assert post(k, OPENAI, OPENAI_BODY, {"Authorization": f"Bearer {k.alpha}"}).status_code == 200
    assert post(k, DS_TEXT, DS_BODY, {"X-DashScope-ApiKey": k.alpha}).status_code == 200
    assert post(k, DS_TEXT, DS_BODY, {"Authorization": f"Bearer {k.beta}"}).status_code == 200
    # A team's key only opens its own models: alpha may not use text-embedding-v3, beta may.
    other = {**OPENAI_BODY, "model": "text-embedding-v3", "dimensions": 512}
    r = post(k, OPENAI, other, {"Authorization": f"Bearer {k.alpha}"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert r.json()["error"]["param"] == "model"
    r = post(k, DS_TEXT, {**DS_BODY, "model": "text-embedding-v3"}, {"X-DashScope-ApiKey": k.alpha})
    assert r.status_code == 403 and r.json()["code"] == "AccessDenied"
    assert post(k, OPENAI, other, {"Authorization": f"Bearer {k.beta}"}).status_code == 200
    # Only alpha has limits: its responses say where it stands, beta's say nothing of limits.
    r = post(k, OPENAI, OPENAI_BODY, {"Authorization": f"Bearer {k.alpha}"})
    assert r.headers["x-ratelimit-limit-requests"] == "1000"
    assert "x-ratelimit-limit-requests" not in post(k, OPENAI, other, {"Authorization": f"Bearer {k.beta}"}).headers


def test_official_clients(keyed: Keyed, standin: StandIn) -> None:
    k = keyed
    good = openai.OpenAI(api_key=k.alpha, base_url=k.gw.url + "/v1", max_retries=0)
    vectors = good.embeddings.create(model="text-embedding-v4", input=["a", "b"], dimensions=64)
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 64
    wrong = new_key()
    k.used.append(wrong)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key=wrong, base_url=k.gw.url + "/v1", max_retries=0).embeddings.create(
            model="text-embedding-v4", input="a"
        )
    with pytest.raises(openai.PermissionDeniedError):
        good.embeddings.create(model="text-embedding-v3", input="a")

    dashscope.base_http_api_url = k.gw.url + "/api/v1"
    ok = dashscope.TextEmbedding.call(model="text-embedding-v4", input=["a"], api_key=k.beta, dimension=64)
    assert ok.status_code == 200 and len(ok.output["embeddings"][0]["embedding"]) == 64
    refused = dashscope.TextEmbedding.call(model="text-embedding-v4", input=["a"], api_key=wrong, dimension=64)
    assert refused.status_code == 401 and refused.code == "InvalidApiKey"


def test_models_are_listed_per_team(keyed: Keyed) -> None:
    k = keyed
    assert httpx.get(k.gw.url + "/v1/models").status_code == 401
    alpha = httpx.get(k.gw.url + "/v1/models", headers={"Authorization": f"Bearer {k.alpha}"}).json()
    assert [m["id"] for m in alpha["data"]] == ["text-embedding-v4"]
    beta = httpx.get(k.gw.url + "/v1/models", headers={"Authorization": f"Bearer {k.beta}"}).json()
    assert len(beta["data"]) > 1
    assert httpx.get(k.gw.url + "/healthz").status_code == 200  # operations routes need no key


def test_no_plaintext_key_in_config_logs_or_settings_dump(keyed: Keyed) -> None:
    k = keyed
    # Keys of its own, valid and not, on both routes: this test does not rely on the module's other tests
    # having run in the same worker (pytest-xdist may split a module's tests across workers).
    changed = k.alpha[:-1] + ("A" if k.alpha[-1] != "A" else "B")
    for key, code in ((k.alpha, 200), (k.beta, 200), (changed, 401), (new_key(), 401)):
        assert post(k, OPENAI, OPENAI_BODY, {"Authorization": f"Bearer {key}"}).status_code == code
        assert post(k, DS_TEXT, DS_BODY, {"X-DashScope-ApiKey": key}).status_code == code
    dump = subprocess.run(
        [sys.executable, "-m", "app.cli", "check-config", "--config", str(k.config)],
        cwd=ROOT,
        env=clean_env(GATEWAY_AUTH="required"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    metrics = httpx.get(k.gw.url + "/metrics").text
    assert 'team="alpha"' in metrics  # requests are attributed to teams by name
    texts = {"config": k.config.read_text(), "log": k.gw.output(), "check-config": dump, "metrics": metrics}
    assert '"team":"alpha"' in texts["log"] and '"team":"beta"' in texts["log"]
    assert len(k.used) >= 10
    for key in k.used:
        if len(key) < 8:
            continue
        for where, text in texts.items():
            assert key not in text, f"a key appears in the {where}"


def test_a_plaintext_key_in_the_config_is_refused_without_echoing_it(tmp_path: Path) -> None:
    key = new_key()
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"teams": {"alpha": {"keys": [key]}}}))
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "check-config", "--config", str(config)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "teams.alpha.keys" in done.stderr and "create-key" in done.stderr
    assert key not in done.stderr + done.stdout


def test_auth_required_without_any_key_refuses_to_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "9"],
        cwd=ROOT,
        env=clean_env(GATEWAY_AUTH="required"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "create-key" in done.stderr


def test_auth_off_warns_unless_loopback() -> None:
    assert auth_off_warning("127.0.0.1") is None
    assert auth_off_warning("::1") is None
    assert auth_off_warning("localhost") is None
    for host in ("0.0.0.0", "10.1.2.3", "::", "gateway.internal"):
        warning = auth_off_warning(host)
        assert warning is not None and "GATEWAY_AUTH=off" in warning and host in warning


def test_presented_key() -> None:
    assert presented_key({"authorization": "Bearer  eg-x "}, dashscope=False) == "eg-x"
    assert presented_key({"authorization": "bearer eg-x"}, dashscope=True) == "eg-x"
    assert presented_key({"x-dashscope-apikey": "eg-y"}, dashscope=True) == "eg-y"
    assert presented_key({"x-dashscope-apikey": "eg-y"}, dashscope=False) is None  # DashScope routes only
    assert presented_key({"authorization": "Token eg-x"}, dashscope=False) is None
