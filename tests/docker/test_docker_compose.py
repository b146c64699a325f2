"""docker-compose.yml on a real Docker engine, from a fresh copy of the repository, after the README's
first-run steps (composekit.py says what this machine changes, and why). The upstream is the stand-in,
run on the host; .env points the gateway at it, as a user points it at DashScope."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import redis
import yaml

from app.inputs import tokentext
from bench.standin import canonical_digest, expected_vector
from tests.support.composekit import Stack, fresh_clone, machine_files, readme_steps, set_env
from tests.support.dockerbuild import Built, Engine, report
from tests.support.dockerkit import host_port
from tests.support.processes import UPSTREAM_KEY, StandIn

pytestmark = pytest.mark.docker

TEAM = "search"
TEAMS = "deploy/gateway/teams.yaml"
ROTATE = f"gateway embedding-gateway create-key --team {TEAM}"  # docker compose exec ...
FIRST_RUN = [
    "cp .env.example .env",
    f"cp deploy/gateway/teams.example.yaml {TEAMS}",
    f"docker compose run --rm --no-deps gateway create-key --team {TEAM}",
    "docker compose up -d",
]


def paste_hash(clone: Path, team: str, created: str, *, replace: bool = False) -> None:
    """What the README asks of the operator: the hash create-key printed, into the team's keys."""
    (digest,) = [word.strip('"') for word in created.split() if word.strip('"').startswith("sha256:")]
    path = clone / TEAMS
    config = yaml.safe_load(path.read_text())
    keys = config["teams"][team]["keys"]
    config["teams"][team]["keys"] = [digest] if replace else [*keys, digest]
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def wait_healthy(stack: Stack, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while (status := stack.inspect("gateway", "{{.State.Health.Status}}")) != "healthy":
        assert status in ("starting", "healthy"), stack.compose("logs", "gateway").stdout[-4000:]
        assert time.monotonic() < deadline, stack.compose("logs", "gateway").stdout[-4000:]
        time.sleep(1)


@pytest.fixture(scope="module")
def stack(
    docker_engine: Engine,
    gateway_image: Built,
    services_image: str,
    standin_session: StandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Any]]:
    clone = fresh_clone(tmp_path_factory.mktemp("compose") / "embedding-gateway")
    ports = {name: host_port() for name in ("gateway", "redis", "limits-redis", "prometheus")}
    stack = Stack(docker_engine, clone, ports)
    machine_files(stack, {"services": services_image})
    assert readme_steps() == FIRST_RUN, "the README's first run changed: update this test with it"
    key = ""
    try:
        for step in FIRST_RUN:
            args = shlex.split(step)
            if args[0] == "cp":
                shutil.copy(clone / args[1], clone / args[2])
            elif args[2] == "run":
                created = stack.compose(*args[2:])
                key = created.stdout.strip()
                paste_hash(clone, TEAM, created.stderr)
            else:
                stack.compose(*args[2:], "gateway", "prometheus")  # Grafana: no image here
            if step == "cp .env.example .env":  # "set an upstream key" (and where it is, the stand-in)
                set_env(
                    clone / ".env",
                    DASHSCOPE_API_KEY=UPSTREAM_KEY,
                    DASHSCOPE_BASE_URL=standin_session.dashscope_base,
                    OPENAI_API_KEY=UPSTREAM_KEY,
                    OPENAI_BASE_URL=standin_session.openai_base,
                    GATEWAY_IMAGE=gateway_image.tag,
                )
        wait_healthy(stack)
        yield [stack, key]  # [the stack, the team's current key]: the rotation test changes the key
    finally:
        stack.compose("down", "-v", "--timeout", "60", check=False)


def client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{stack.ports['gateway']}/v1", api_key=key, max_retries=0)


def test_first_run_serves_the_team_key_and_refuses_no_key(stack: list[Any], standin: StandIn) -> None:
    s, key = stack
    assert key.startswith("eg-") and key not in (s.clone / TEAMS).read_text()
    assert s.inspect("gateway", "{{.RestartCount}}") == "0"
    texts = ["compose one", "compose two"]
    out = client(s, key).embeddings.create(model="text-embedding-v4", input=texts, dimensions=64)
    want = [expected_vector("text-embedding-v4", 64, t) for t in texts]
    np.testing.assert_allclose([d.embedding for d in out.data], want, rtol=1e-6, atol=1e-6)
    again = client(s, key).embeddings.with_raw_response.create(model="text-embedding-v4", input=texts, dimensions=64)
    assert (again.headers["x-cache-hits"], again.headers["x-cache-misses"]) == ("2", "0")
    assert len(standin.calls()) == 1
    with pytest.raises(openai.AuthenticationError):
        client(s, "eg-not-a-key").embeddings.create(model="text-embedding-v4", input="x")
    bare = httpx.post(
        f"http://127.0.0.1:{s.ports['gateway']}/v1/embeddings", json={"model": "text-embedding-v4", "input": "x"}
    )
    assert bare.status_code == 401 and "API key" in bare.json()["error"]["message"]


def test_token_ids_are_decoded_inside_the_image(stack: list[Any], standin: StandIn) -> None:
    """LangChain's default token ids, decoded with the encoding file the image's own packages ship (issue
    15): the container reaches no download host, so a download would have failed the request."""
    s, key = stack
    enc = tokentext.encoding("cl100k_base")
    assert enc is not None
    text = "compose token ids"
    out = client(s, key).embeddings.create(model="text-embedding-v4", input=[enc.encode_ordinary(text)], dimensions=64)
    want = expected_vector("text-embedding-v4", 64, text)
    np.testing.assert_allclose(out.data[0].embedding, want, rtol=1e-6, atol=1e-6)
    assert standin.digests() == [canonical_digest("text-embedding-v4", 64, text)]


def test_cache_and_limits_each_on_their_redis(stack: list[Any]) -> None:
    s, key = stack
    client(s, key).embeddings.create(model="text-embedding-v4", input="limits", dimensions=64)
    cache = redis.Redis(port=s.ports["redis"])
    limits = redis.Redis(port=s.ports["limits-redis"])
    assert cache.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
    assert limits.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert cache.dbsize() > 0 and limits.dbsize() > 0  # the team has rpm/tpm limits: their state is there
    assert not set(cache.scan_iter(count=1000)) & set(limits.scan_iter(count=1000))


def test_prometheus_scrapes_the_gateway_and_loads_every_alert(stack: list[Any]) -> None:
    s, _ = stack
    api = f"http://127.0.0.1:{s.ports['prometheus']}/api/v1"
    rules = yaml.safe_load((s.clone / "deploy" / "prometheus" / "alerts.yml").read_text())
    want = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    deadline = time.monotonic() + 90
    while True:
        targets = httpx.get(api + "/targets").json()["data"]["activeTargets"]
        loaded = [r for g in httpx.get(api + "/rules").json()["data"]["groups"] for r in g["rules"]]
        up = [t for t in targets if t["health"] == "up" and t["labels"]["job"] == "embedding-gateway"]
        if up and {r["name"] for r in loaded} == want and all(r["health"] == "ok" for r in loaded):
            break
        assert time.monotonic() < deadline, (targets, loaded)
        time.sleep(1)
    value = httpx.get(api + "/query", params={"query": 'up{job="embedding-gateway"}'}).json()["data"]["result"]
    assert [v["value"][1] for v in value] == ["1"]


def test_a_key_rotated_in_the_teams_file_works_without_a_restart(stack: list[Any]) -> None:
    """The documented rotation: a new key from create-key, its hash in teams.yaml, the old one removed."""
    s, old = stack
    started = s.inspect("gateway", "{{.State.StartedAt}}")
    # With the stack up: create-key in the running gateway container (docs/operations.md). (`run` would
    # work too, but docker-compose v1 links a new container to the running Redis ones, which host
    # networking refuses on this machine.)
    created = s.compose("exec", "-T", *shlex.split(ROTATE))
    new = created.stdout.strip()
    paste_hash(s.clone, TEAM, created.stderr, replace=True)
    url = f"http://127.0.0.1:{s.ports['gateway']}/v1/embeddings"

    def status(key: str) -> int:
        body = {"model": "text-embedding-v4", "input": "rotated", "dimensions": 64}
        return httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}).status_code

    deadline = time.monotonic() + 30  # TEAMS_RELOAD_S: 5 s
    while not all(status(new) == 200 and status(old) == 401 for _ in range(6)):
        assert time.monotonic() < deadline, s.compose("logs", "gateway").stdout[-3000:]
        time.sleep(0.5)
    stack[1] = new
    s.compose("kill", "-s", "HUP", "gateway")  # the documented immediate reload: nothing changed
    deadline = time.monotonic() + 30
    while "no change to teams" not in (logs := s.compose("logs", "gateway").stdout):
        assert time.monotonic() < deadline, logs[-3000:]
        time.sleep(0.5)
    assert "teams reloaded (file changed)" in logs and old not in logs and new not in logs
    assert s.inspect("gateway", "{{.State.StartedAt}} {{.RestartCount}}") == f"{started} 0"
    assert status(new) == 200


def test_stop_during_load_completes_every_accepted_request(stack: list[Any], standin: StandIn) -> None:
    """Runs last (it stops the gateway): `docker compose stop` while requests are in flight (the upstream
    answers in 300 ms)."""
    s, key = stack
    FIRST = 12
    standin.control(latency_ms=300)
    url = f"http://127.0.0.1:{s.ports['gateway']}/v1/embeddings"

    async def one(http: httpx.AsyncClient, i: int) -> int | str:
        body = {"model": "text-embedding-v4", "input": f"stop {i}", "dimensions": 64}
        try:
            return (await http.post(url, json=body, headers={"Authorization": f"Bearer {key}"})).status_code
        except httpx.ConnectError:
            return "refused"  # not accepted: the gateway had stopped listening
        except httpx.HTTPError as exc:
            return f"broken: {exc!r}"

    async def load() -> list[int | str]:
        async with httpx.AsyncClient(timeout=60) as http:
            first = [asyncio.create_task(one(http, i)) for i in range(FIRST)]
            await asyncio.sleep(0.15)  # all in flight
            stopping = asyncio.create_task(asyncio.to_thread(s.compose, "stop", "gateway"))
            later = []
            for i in range(FIRST, 1000):
                later.append(asyncio.create_task(one(http, i)))
                await asyncio.sleep(0.025)  # with FIRST, under the example team's concurrency limit (32)
                if stopping.done():
                    break
            await stopping
            return list(await asyncio.gather(*first, *later))

    outcomes = asyncio.run(load())
    assert outcomes[:FIRST] == [200] * FIRST
    # Accepted = it reached the upstream through the gateway: each of those was answered. The others were
    # refused, or reset in the listen backlog without a byte of answer (never accepted by a worker).
    reached = set(standin.digests())
    accepted = [i for i in range(len(outcomes)) if canonical_digest("text-embedding-v4", 64, f"stop {i}") in reached]
    assert accepted[:FIRST] == list(range(FIRST)) and len(accepted) > FIRST, "none accepted after the stop began"
    assert [outcomes[i] for i in accepted] == [200] * len(accepted)
    assert not [o for o in outcomes if isinstance(o, int) and o != 200], outcomes  # no status but 200 at all
    unanswered = Counter(str(o).split("(")[0] for o in outcomes if o != 200)
    report(f"compose stop under load: {len(accepted)} accepted and answered 200, not accepted: {dict(unanswered)}")
    assert s.inspect("gateway", "{{.State.ExitCode}} {{.RestartCount}}") == "0 0"
