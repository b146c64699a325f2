"""Issue 23, items 3 and 6: the clients teams bring besides issue 15's, pointed at the gateway started as a
process (auth on, Redis, the stand-in upstream), each used as its documentation shows: exact vectors, and
the same documents asked again are served from the cache (the upstream sees each text once).

JavaScript: LangChain JS (`OpenAIEmbeddings`), the Vercel AI SDK with `@ai-sdk/openai` and
`@ai-sdk/openai-compatible` (tests/clients/node/frameworks.mjs, on the Node.js 22 of tests/clients/node).
Python: the frameworks of tests/clients/pyframeworks.py, in .venv-clients. LangChain JS against a team allowed
2 requests a minute: the third call waits out the 429's Retry-After (LangChain gives up at once above 60 s)
and succeeds; it runs in the background from the module's start, so its wait overlaps the other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.standin import canonical_digest, expected_vector
from tests.support.processes import ROOT, Gateway, GatewayFactory, RedisServer, StandIn, clean_env
from tests.support.teamkit import write_config
from tests.support.tiktokencache import offline_cache

CLIENTS = ROOT / "tests" / "clients"
NODE = CLIENTS / "node" / "node_modules" / ".bin" / "node"
PYTHON = ROOT / ".venv-clients" / "bin" / "python"
TEXT = "text-embedding-v4"


def need(present: bool, what: str) -> None:
    if not present:
        message = f"{what} is missing: run scripts/install-clients.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def salted(*texts: str) -> list[str]:
    salt = uuid.uuid4().hex[:10]
    return [f"{t} {salt}" for t in texts]


@dataclass
class More:
    gw: Gateway
    keys: dict[str, str]
    env: dict[str, str]
    limited: subprocess.Popen[str] | None = None
    limited_texts: tuple[str, ...] = ()

    def args(self, texts: list[str], query: str, team: str = "more") -> str:
        return json.dumps({"base": self.gw.url, "key": self.keys[team], "model": TEXT, "texts": texts, "query": query})

    def run(self, argv: list[str], cwd: Path) -> Any:
        proc = subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, f"{argv[:3]} failed:\n{proc.stderr[-4000:]}"
        return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def more(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[More]:
    tmp = tmp_path_factory.mktemp("more")
    config = tmp / "gateway.yaml"
    # Per-minute windows 15 s long: the langchain JS client's wait for its window takes seconds, not a minute.
    keys = write_config(config, {"more": {}, "rpm2": {"rpm": 2}}, limits_window_s=15)
    gateways.secrets.update(keys.values())
    gw = gateways.start(redis_url=redis_server.url, config=str(config), env={"GATEWAY_AUTH": "required"})
    env = clean_env(
        TIKTOKEN_CACHE_DIR=str(offline_cache(tmp / "tiktoken")),
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # litellm (under dspy) would fetch its price list at import
        HAYSTACK_TELEMETRY_ENABLED="False",  # haystack and mem0 would send usage events to posthog
        MEM0_TELEMETRY="False",
        DSPY_CACHEDIR=str(tmp / "dspy"),
        MEM0_DIR=str(tmp / "mem0"),
    )
    m = More(gw, keys, env)
    if NODE.exists():
        m.limited_texts = tuple(salted("limited one", "limited two", "limited three"))
        argv = [str(NODE), "frameworks.mjs", "langchain_rate_limited", m.args(list(m.limited_texts), "", "rpm2")]
        m.limited = subprocess.Popen(
            argv, cwd=CLIENTS / "node", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    yield m
    if m.limited is not None and m.limited.poll() is None:
        m.limited.kill()
        m.limited.communicate()


def assert_vectors(got: list[Any], texts: list[str]) -> None:
    assert len(got) == len(texts)
    for g, t in zip(got, texts, strict=True):
        np.testing.assert_array_equal(np.asarray(g, dtype=np.float32), expected_vector(TEXT, 1024, t))


def check(out: dict[str, Any], texts: list[str], query: str, standin: StandIn) -> None:
    """Exact vectors, and each text sent upstream once: the documents asked again were cache hits."""
    assert_vectors(out["documents"], texts)
    assert_vectors([out["query"]], [query])
    assert_vectors(out["again"], texts)
    seen = Counter(standin.digests())  # other tests' calls may land meanwhile: count this test's texts only
    assert [seen[canonical_digest(TEXT, 1024, t)] for t in [*texts, query]] == [1] * (len(texts) + 1)


@pytest.mark.parametrize("case", ["langchain", "ai_sdk_openai", "ai_sdk_openai_compatible"])
def test_javascript_clients(more: More, standin: StandIn, case: str) -> None:
    need(NODE.exists(), "Node.js 22 and the npm packages of tests/clients/node")
    texts, (query,) = salted(f"{case} one", f"{case} two"), salted(f"{case} query")
    check(
        more.run([str(NODE), "frameworks.mjs", case, more.args(texts, query)], CLIENTS / "node"), texts, query, standin
    )


@pytest.mark.parametrize("case", ["haystack", "dspy", "pydantic_ai", "mem0"])
def test_python_frameworks(more: More, standin: StandIn, case: str) -> None:
    need(PYTHON.exists(), "the client matrix's virtualenv .venv-clients")
    texts, (query,) = salted(f"{case} one", f"{case} two"), salted(f"{case} query")
    out = more.run([str(PYTHON), str(CLIENTS / "pyframeworks.py"), case, more.args(texts, query)], ROOT)
    check(out, texts, query, standin)


def _rejections(more: More, team: str) -> float:
    total = 0.0
    for line in httpx.get(more.gw.url + "/metrics").text.splitlines():
        if line.startswith("gateway_ratelimit_rejections_total{") and f'team="{team}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_langchain_js_waits_out_a_429_and_succeeds(more: More) -> None:
    """Last in the module: the process started with it has had the other tests' time to wait."""
    need(more.limited is not None, "Node.js 22 and the npm packages of tests/clients/node")
    assert more.limited is not None
    stdout, stderr = more.limited.communicate(timeout=150)
    assert more.limited.returncode == 0, stderr[-4000:]
    out = json.loads(stdout)
    assert_vectors(out["documents"], list(more.limited_texts))
    assert _rejections(more, "rpm2") >= 1  # the third call was refused once, then waited and retried
