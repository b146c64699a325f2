"""The usage ledger end to end: known traffic from three teams through two gateway processes over one
redis-server (hits, misses, a partial hit, a refused request, a failed upstream call, both wire formats),
then the usage and costs endpoints, read with plain HTTP and with the openai SDK's raw client, and the
`embedding-gateway usage` CLI: exactly the expected figures per team, key and model. A team key reads its
own team only (403 for another's). A team over its daily budget: misses 429 insufficient_quota (DashScope:
Arrearage) on every replica, hits 200."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from app.teams.keys import hash_key, new_key
from app.usage.rows import key_id
from bench.standin import text_tokens
from tests.support.polling import eventually
from tests.support.processes import ROOT, Gateway, GatewayFactory, RedisServer, StandIn, clean_env, stop
from tests.support.teamkit import DS_TEXT

V4, SMALL = "text-embedding-v4", "text-embedding-3-small"
RATE = {V4: 500, SMALL: 20}  # nanos per token: CNY 0.0005 and USD 0.00002 per 1K tokens (the built-in prices)
CURRENCY = {V4: "cny", SMALL: "usd"}


@dataclass
class Fleet:
    gws: list[Gateway]
    keys: dict[str, str]  # name -> key: alpha1, alpha2, bravo, charlie, delta, admin, ops
    config: Path
    redis_url: str
    truth: dict[tuple[str, str, str], dict[str, int]] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set)  # (model, text) cached

    def kid(self, name: str) -> str:
        return key_id(hash_key(self.keys[name]))


@pytest.fixture(scope="module")
def fleet(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    names = ["alpha1", "alpha2", "bravo", "charlie", "delta", "admin", "ops"]
    keys = {n: new_key() for n in names}
    h = {n: hash_key(k) for n, k in keys.items()}
    cfg = Path(tmp_path_factory.mktemp("usage")) / "gateway.yaml"
    body = {
        "cache_namespace": "u" + uuid.uuid4().hex[:10],
        "retry_attempts": 1,  # the failed upstream call fails at once
        "admins": [h["admin"]],
        "teams": {
            "alpha": {"keys": [h["alpha1"], h["alpha2"]]},
            "bravo": {"keys": [h["bravo"]]},
            "charlie": {"keys": [h["charlie"]], "rpm": 3},
            "delta": {"keys": [h["delta"]], "budget": {"daily": 0.000001}},
            "ops": {"keys": [h["ops"]], "admin": True, "models": []},
        },
    }
    cfg.write_text(yaml.safe_dump(body))
    gws = [gateways.start(redis_url=redis_server.url, config=str(cfg)) for _ in range(2)]
    yield Fleet(gws, keys, cfg, redis_server.url)
    for g in gws:
        stop(g.proc)


def send(
    f: Fleet, gw: int, who: str, team: str, model: str, texts: list[str], *, dashscope: bool = False
) -> httpx.Response:
    """One request; the truth learns what the ledger must hold for it when it is answered 200."""
    headers = {"Authorization": f"Bearer {f.keys[who]}"}
    if dashscope:
        body: dict[str, Any] = {"model": model, "input": {"texts": texts}, "parameters": {"dimension": 64}}
        r = httpx.post(f.gws[gw].url + DS_TEXT, json=body, headers=headers, timeout=30)
    else:
        body = {"model": model, "input": texts, "dimensions": 64}
        r = httpx.post(f.gws[gw].url + "/v1/embeddings", json=body, headers=headers, timeout=30)
    if r.status_code != 200:
        return r
    unique = list(dict.fromkeys(texts))
    hits = [t for t in texts if (model, t) in f.seen]
    misses = [t for t in unique if (model, t) not in f.seen]
    if not dashscope:
        assert int(r.headers["x-cache-hits"]) == len(hits)
    tokens = sum(text_tokens(t) for t in misses)
    reported = r.json()["usage"]["total_tokens" if dashscope else "prompt_tokens"]
    assert reported == tokens  # partial hits bill only their misses
    row = f.truth.setdefault((team, f.kid(who), model), {})
    saved = sum(max(1, len(t) // 3) for t in hits)
    for metric, n in (
        ("requests", 1),
        ("items", len(texts)),
        ("hits", len(hits)),
        ("tokens", tokens),
        ("saved", saved),
    ):
        row[metric] = row.get(metric, 0) + n
    f.seen.update((model, t) for t in unique)
    return r


def new(tag: str) -> str:
    return f"{tag} {uuid.uuid4().hex} and some more words to weigh a few tokens"


@pytest.fixture(scope="module")
def traffic(fleet: Fleet, standin_session: StandIn) -> Fleet:
    standin = standin_session
    f = fleet
    t1, t2, t3, d1 = new("t1"), new("t2"), new("t3"), new("d1")
    assert send(f, 0, "alpha1", "alpha", V4, [t1, t2]).status_code == 200  # two misses
    assert send(f, 1, "alpha2", "alpha", V4, [t1, t3]).status_code == 200  # a partial hit
    assert send(f, 1, "alpha1", "alpha", V4, [t1]).status_code == 200  # a whole hit
    assert send(f, 0, "alpha1", "alpha", V4, [t2, d1], dashscope=True).status_code == 200  # DashScope wire
    assert send(f, 0, "bravo", "bravo", V4, [t1]).status_code == 200  # shared scope: alpha's vector
    u = [new("u1"), new("u2"), new("u3")]
    assert send(f, 1, "bravo", "bravo", SMALL, u).status_code == 200
    assert send(f, 0, "bravo", "bravo", SMALL, [u[0], u[0]]).status_code == 200  # duplicates: hits both
    c1 = new("c1")
    assert send(f, 0, "charlie", "charlie", V4, [c1]).status_code == 200
    assert send(f, 1, "charlie", "charlie", V4, [c1]).status_code == 200
    standin.control(fail_rate=1.0, fail_modes=["500"])
    try:
        failed = send(f, 0, "charlie", "charlie", V4, [new("failed")])
    finally:
        standin.control(fail_rate=0.0)
    assert failed.status_code >= 500  # the upstream failed: nothing in the ledger
    refused = send(f, 1, "charlie", "charlie", V4, [new("refused")])
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    return f


def expected(f: Fleet, group: tuple[str, ...]) -> dict[tuple[str, ...], dict[str, int]]:
    out: dict[tuple[str, ...], dict[str, int]] = {}
    for (team, kid, model), row in f.truth.items():
        parts = {"project_id": team, "api_key_id": kid, "model": model}
        k = tuple(parts[g] for g in group)
        into = out.setdefault(k, {})
        for metric, n in row.items():
            into[metric] = into.get(metric, 0) + n
        into.setdefault("cost", 0)
        into["cost"] = into["cost"] + row["tokens"] * RATE[model]
        into["saved_cost"] = into.get("saved_cost", 0) + row["saved"] * RATE[model]
    return out


def usage_rows(page_data: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, int]]:
    out: dict[tuple[str, ...], dict[str, int]] = {}
    for bucket in page_data:
        assert bucket["object"] == "bucket" and bucket["end_time"] - bucket["start_time"] == 86400
        for r in bucket["results"]:
            assert r["object"] == "organization.usage.embeddings.result" and r["user_id"] is None
            k = (r["project_id"], r["api_key_id"], r["model"])
            into = out.setdefault(k, {})
            for metric, field_ in (("requests", "num_model_requests"), ("items", "num_items"), ("hits", "cache_hits"),
                                   ("tokens", "input_tokens"), ("saved", "cache_saved_input_tokens")):  # fmt: skip
                into[metric] = into.get(metric, 0) + r[field_]
    return out


GROUP = ("project_id", "api_key_id", "model")
WATCHED = {"alpha", "bravo", "charlie"}


def read_usage(f: Fleet, who: str, gw: int = 0, **params: Any) -> httpx.Response:
    q = {"start_time": int(time.time()) - 3 * 3600, "group_by": list(GROUP), **params}
    return httpx.get(f.gws[gw].url + "/v1/organization/usage/embeddings", params=q,
                     headers={"Authorization": f"Bearer {f.keys[who]}"}, timeout=30)  # fmt: skip


def until_landed(f: Fleet) -> dict[tuple[str, ...], dict[str, int]]:
    """The usage of the watched teams once every batch landed (each process writes once a second)."""
    want = {k: {m: v for m, v in row.items() if m in ("requests", "items", "hits", "tokens", "saved")}
            for k, row in expected(f, GROUP).items()}  # fmt: skip

    def landed() -> dict[tuple[str, ...], dict[str, int]]:
        r = read_usage(f, "admin")
        assert r.status_code == 200, r.text
        got = {k: v for k, v in usage_rows(r.json()["data"]).items() if k[0] in WATCHED}
        assert got == want
        return got

    return eventually(landed, within=20, interval=0.3)


def test_usage_per_team_key_and_model_is_exactly_the_traffic(traffic: Fleet) -> None:
    f = traffic
    want = {k: {m: v for m, v in row.items() if m in ("requests", "items", "hits", "tokens", "saved")}
            for k, row in expected(f, GROUP).items()}  # fmt: skip
    assert until_landed(f) == want
    assert want[("alpha", f.kid("alpha2"), V4)]["hits"] == 1  # the partial hit, on its own key


def test_the_openai_sdk_raw_client_reads_the_same(traffic: Fleet) -> None:
    f = traffic
    until_landed(f)
    client = openai.OpenAI(base_url=f.gws[1].url + "/v1", api_key=f.keys["ops"], max_retries=0)  # an admin team
    q = {"start_time": int(time.time()) - 3 * 3600, "group_by": list(GROUP), "bucket_width": "1d"}
    raw = client.get("/organization/usage/embeddings", cast_to=httpx.Response, options={"params": q})
    assert raw.status_code == 200
    page = raw.json()
    assert page["object"] == "page" and page["has_more"] is False and page["next_page"] is None
    got = {k: v for k, v in usage_rows(page["data"]).items() if k[0] in WATCHED}
    want = {k: {m: v for m, v in row.items() if m in ("requests", "items", "hits", "tokens", "saved")}
            for k, row in expected(f, GROUP).items()}  # fmt: skip
    assert got == want
    cq = {"start_time": q["start_time"], "group_by": ["project_id", "line_item"]}
    costs = client.get("/organization/costs", cast_to=object, options={"params": cq})
    money: dict[tuple[str, str], tuple[float, float, str]] = {}
    for bucket in costs["data"]:  # type: ignore[index]
        for r in bucket["results"]:
            assert r["object"] == "organization.costs.result"
            if r["project_id"] in WATCHED:
                before = money.get((r["project_id"], r["line_item"]), (0.0, 0.0, r["amount"]["currency"]))
                money[(r["project_id"], r["line_item"])] = (
                    before[0] + r["amount"]["value"],
                    before[1] + r["cache_saved_amount"]["value"],
                    before[2],
                )
    want_money = {k: (row["cost"] / 1e9, row["saved_cost"] / 1e9, CURRENCY[k[1]])
                  for k, row in expected(f, ("project_id", "model")).items()}  # fmt: skip
    assert money.keys() == want_money.keys()
    for k, (cost, saved, currency) in money.items():
        assert currency == want_money[k][2]
        assert cost == pytest.approx(want_money[k][0], abs=1e-12) and saved == pytest.approx(
            want_money[k][1], abs=1e-12
        )


def test_a_team_key_reads_its_own_team_only(traffic: Fleet) -> None:
    f = traffic
    until_landed(f)
    own = read_usage(f, "bravo", 1)
    assert own.status_code == 200
    teams = {r["project_id"] for b in own.json()["data"] for r in b["results"]}
    assert teams == {"bravo"}
    other = read_usage(f, "bravo", 0, project_ids=["alpha"])
    assert other.status_code == 403 and other.json()["error"]["param"] == "project_ids"
    costs = httpx.get(f.gws[0].url + "/v1/organization/costs", params={"start_time": 0, "project_ids": "charlie"},
                      headers={"Authorization": f"Bearer {f.keys['alpha2']}"}, timeout=30)  # fmt: skip
    assert costs.status_code == 403
    assert read_usage(f, "alpha1", 0, project_ids=["alpha"]).status_code == 200
    nobody = httpx.get(f.gws[0].url + "/v1/organization/usage/embeddings", params={"start_time": 0}, timeout=30)
    assert nobody.status_code == 401
    bad = read_usage(f, "admin", 0, bucket_width="1w")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "bucket_width"


def test_the_cli_prints_the_same(traffic: Fleet) -> None:
    f = traffic
    until_landed(f)
    env = clean_env(REDIS_URL=f.redis_url)
    done = subprocess.run([sys.executable, "-m", "app.cli", "usage", "--config", str(f.config), "--since", "1d",
                           "--by", "team,key,model", "--csv"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    got = {}
    for row in csv.DictReader(io.StringIO(done.stdout)):
        if row["team"] in WATCHED:
            got[(row["team"], row["key"], row["model"])] = {
                "requests": int(row["requests"]), "items": int(row["items"]), "hits": int(row["cache_hits"]),
                "tokens": int(row["tokens"]), "saved": int(row["saved_tokens"]),
                "cost": round(float(row["cost"]) * 1e9), "saved_cost": round(float(row["saved"]) * 1e9),
            }  # fmt: skip
    assert got == expected(f, GROUP)
    table = subprocess.run([sys.executable, "-m", "app.cli", "usage", "--config", str(f.config), "--by", "team"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    header, *lines = table.stdout.splitlines()
    assert header.split()[:3] == ["team", "requests", "items"] and any(line.startswith("alpha ") for line in lines)


def test_a_spent_daily_budget_refuses_misses_on_every_replica_and_serves_hits(fleet: Fleet) -> None:
    f = fleet
    paid = new("budget")
    first = send(f, 0, "delta", "delta", V4, [paid])
    assert first.status_code == 200  # nothing spent yet: CNY 0.000001 is less than this request
    client = openai.OpenAI(base_url=f.gws[0].url + "/v1", api_key=f.keys["delta"], max_retries=0)
    with pytest.raises(openai.RateLimitError) as refused:
        client.embeddings.create(model=V4, input=[new("more")], dimensions=64)
    assert refused.value.code == "insufficient_quota"
    assert int(refused.value.response.headers["retry-after"]) <= 86400
    assert send(f, 0, "delta", "delta", V4, [paid]).status_code == 200  # a hit costs nothing: served

    def refused_elsewhere() -> httpx.Response:  # the other replica learns the spend from its next batch
        other = send(f, 1, "delta", "delta", V4, [new("elsewhere")], dashscope=True)
        assert other.status_code == 429, other.text
        return other

    other = eventually(refused_elsewhere, within=15, interval=0.3)
    assert other.json()["code"] == "Arrearage"
    assert send(f, 1, "delta", "delta", V4, [paid], dashscope=True).status_code == 200
