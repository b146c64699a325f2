"""Issue 23, item 2: clients generated from the live OpenAPI document of a running gateway.

openapi-python-client (in .venv-clients), openapi-typescript + openapi-fetch and @hey-api/openapi-ts (in
tests/clients/node, compiled by tsc under `strict`): each generates without a warning, gets the stand-in's
exact vectors, and reads a 401 and a 429 as the generated error type. scripts/install-clients.sh installs
them all (pinned); a missing one skips here, and fails under CI=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bench.standin import expected_vector
from tests.support.processes import ROOT, Gateway, GatewayFactory, RedisServer, StandIn, clean_env
from tests.support.teamkit import write_config

CLIENTS = ROOT / "tests" / "clients"
NODE_DIR = CLIENTS / "node"
GENERATED = NODE_DIR / "generated"
BIN = NODE_DIR / "node_modules" / ".bin"
PYTHON = ROOT / ".venv-clients" / "bin" / "python"
MODEL = "text-embedding-v4"
THROTTLED = ("py", "openapi-fetch", "hey-api")


def need(present: bool, what: str) -> None:
    if not present:
        message = f"{what} is missing: run scripts/install-clients.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Generated:
    gw: Gateway
    keys: dict[str, str]
    env: dict[str, str]

    @property
    def document(self) -> str:
        return self.gw.url + "/openapi.json"

    def args(self, client: str, texts: list[str]) -> str:
        throttled = self.keys[f"throttled_{client}"]
        return json.dumps(
            {"base": self.gw.url, "key": self.keys["gen"], "throttled": throttled, "model": MODEL, "texts": texts}
        )

    def run(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(argv, cwd=cwd, env=env or self.env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{argv[:3]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def generated(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Generated:
    config = tmp_path_factory.mktemp("generated") / "gateway.yaml"
    teams: dict[str, dict[str, Any]] = {"gen": {}, **{f"throttled_{c}": {"rpm": 1} for c in THROTTLED}}
    keys = write_config(config, teams)
    gateways.secrets.update(keys.values())
    gw = gateways.start(redis_url=redis_server.url, config=str(config), env={"GATEWAY_AUTH": "required"})
    env = clean_env(PATH=f"{BIN}:{Path(PYTHON).parent}:{os.environ.get('PATH', '')}", NO_COLOR="1")
    return Generated(gw, keys, env)


def check(out: dict[str, Any], texts: list[str]) -> None:
    want = [expected_vector(MODEL, 1024, t) for t in texts]
    assert len(out["vectors"]) == len(want)
    for got, w in zip(out["vectors"], want, strict=True):
        np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), w)
    assert out["unauthorized"] == {"status": 401, "type": "authentication_error", "code": "invalid_api_key"}
    assert out["limited"] == {"status": 429, "type": "rate_limit_error", "code": "rate_limit_exceeded"}


def no_warnings(output: str) -> None:
    lowered = output.lower()
    assert "warn" not in lowered and "error" not in lowered and "cannot" not in lowered, output[-3000:]


def test_openapi_python_client(generated: Generated, standin: StandIn, tmp_path: Path) -> None:
    need(PYTHON.exists(), "the client matrix's virtualenv .venv-clients")
    generator = PYTHON.parent / "openapi-python-client"
    need(generator.exists(), "openapi-python-client (tests/clients/requirements.txt)")
    out_dir = tmp_path / "client"
    log = generated.run([str(generator), "generate", "--url", generated.document, "--output-path", str(out_dir)], ROOT)
    no_warnings(log)
    texts = ["generated python one", "generated python two"]
    out = json.loads(
        generated.run([str(PYTHON), str(CLIENTS / "generated_py.py"), str(out_dir), generated.args("py", texts)], ROOT)
    )
    check(out, texts)


@pytest.fixture(scope="module")
def typescript(generated: Generated) -> Path:
    """Both TypeScript clients generated from the live document, and calls.ts compiled against them by tsc
    (`strict`, `noEmitOnError`: an error of type, e.g. an untyped error body, fails the build)."""
    need(shutil.which("node") is not None, "node")
    need((BIN / "tsc").exists(), "typescript and the generators (npm ci in tests/clients/node)")
    out = GENERATED / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    no_warnings(
        generated.run([str(BIN / "openapi-typescript"), generated.document, "-o", str(out / "schema.d.ts")], GENERATED)
    )
    env = {**generated.env, "OPENAPI_URL": generated.document}
    no_warnings(generated.run([str(BIN / "openapi-ts"), "-f", "openapi-ts.config.mjs"], GENERATED, env))
    generated.run([str(BIN / "tsc"), "-p", "tsconfig.json"], GENERATED)
    return out / "js" / "calls.js"


@pytest.mark.parametrize("client", ["openapi-fetch", "hey-api"])
def test_typescript_clients(generated: Generated, typescript: Path, standin: StandIn, client: str) -> None:
    texts = [f"generated {client} one", f"generated {client} two"]
    out = json.loads(
        generated.run([str(BIN / "node"), str(typescript), client, generated.args(client, texts)], GENERATED)
    )
    check(out, texts)


def test_the_document_as_generators_read_it(generated: Generated) -> None:
    doc = httpx.get(generated.document).json()
    schemas = doc["components"]["schemas"]
    assert {"OpenAIError", "DashScopeError", "EmbeddingRequest"} <= set(schemas)
    assert not [name for name in schemas if "__" in name or name in ("HTTPValidationError", "ValidationError")]
    assert '"default": null' not in json.dumps(doc)
    model = schemas["EmbeddingRequest"]["properties"]["model"]
    assert model["type"] == "string" and "enum" not in model and MODEL in model["description"]
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "a team's API key: Authorization: Bearer <key>",
    }
    assert doc["components"]["securitySchemes"]["dashscopeApiKey"]["name"] == "X-DashScope-ApiKey"
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            assert "422" not in op["responses"], (method, path)
            want = [{"bearer": []}, {"dashscopeApiKey": []}] if path.startswith("/api/v1/") else [{"bearer": []}]
            assert op.get("security") == (want if path.startswith(("/v1/", "/api/v1/")) else None), (method, path)
    embeddings = doc["paths"]["/v1/embeddings"]["post"]
    assert embeddings["operationId"] == "create_embeddings"
    assert {"401", "429"} <= set(embeddings["responses"])
