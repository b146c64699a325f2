"""The README's examples run as written (issue 15): every ```bash and ```python block that calls the gateway
at localhost:8000 is extracted and run against a real gateway process and the stand-in upstream. The only
changes made to a block: the address becomes the test gateway's, YOUR-TEAM-KEY a real team key.

Blocks with a team key run against a gateway with auth required; blocks without one against a gateway
started as scripts/serve-local.sh starts it (auth off on loopback, the embedded model, no upstream key).
Python blocks run in the client matrix's virtualenv (.venv-clients: openai, dashscope, LangChain, ...).
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import httpx
import pytest

from tests.clients.test_clients import PYTHON, need
from tests.support.processes import ROOT, Gateway, GatewayFactory, RedisServer, clean_env
from tests.support.teamkit import write_config
from tests.support.tiktokencache import offline_cache

BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)
README = (ROOT / "README.md").read_text()
EXAMPLES = [(lang, code) for lang, code in BLOCK.findall(README) if "localhost:8000" in code]


def test_the_readme_has_examples_of_each_kind() -> None:
    keyed = [lang for lang, code in EXAMPLES if "YOUR-TEAM-KEY" in code]
    assert keyed.count("python") >= 3 and "bash" in keyed, EXAMPLES
    assert any("YOUR-TEAM-KEY" not in code for _, code in EXAMPLES)  # the local model's, as serve-local runs it
    assert 'base64,iVBORw0KGgo..."' not in README  # no truncated placeholder


@pytest.fixture(scope="module")
def team_gateway(
    gateways: GatewayFactory, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Gateway, str]:
    config = tmp_path_factory.mktemp("readme") / "gateway.yaml"
    keys = write_config(config, {"readme": {}})
    gateways.secrets.update(keys.values())
    gw = gateways.start(redis_url=redis_server.url, config=str(config), env={"GATEWAY_AUTH": "required"})
    return gw, keys["readme"]


@pytest.fixture(scope="module")
def local_gateway(gateways: GatewayFactory) -> Gateway:
    gw = gateways.start(
        env={
            "GATEWAY_AUTH": "off",  # as scripts/serve-local.sh runs it: the README's local example sends no key
            "LOCAL_MODEL": "true",
            "DASHSCOPE_API_KEY": "",
            "OPENAI_API_KEY": "",
            "OPENAI_BASE_URL": "https://api.openai.com/v1",
        }
    )
    deadline = time.monotonic() + 120
    while httpx.get(gw.url + "/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the local model did not load within 120 s"
        time.sleep(0.2)
    return gw


def _run(lang: str, code: str, gw: Gateway, key: str, tmp_path) -> str:  # type: ignore[no-untyped-def]
    code = code.replace("localhost:8000", gw.url.removeprefix("http://")).replace("YOUR-TEAM-KEY", key)
    if lang == "bash":
        argv = ["bash", "-euo", "pipefail", "-c", code]
    else:
        need(PYTHON.exists(), "the client matrix's virtualenv .venv-clients")
        script = tmp_path / "example.py"
        script.write_text(code)
        argv = [str(PYTHON), str(script)]
    env = clean_env(TIKTOKEN_CACHE_DIR=str(offline_cache(tmp_path / "tiktoken")), LITELLM_LOCAL_MODEL_COST_MAP="True")
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"README example failed:\n{code}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.parametrize(("lang", "code"), EXAMPLES, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(EXAMPLES)])
def test_readme_example_runs_verbatim(
    lang: str, code: str, team_gateway: tuple[Gateway, str], request: pytest.FixtureRequest, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    if "YOUR-TEAM-KEY" in code:
        gw, key = team_gateway
    else:
        gw, key = request.getfixturevalue("local_gateway"), ""
    out = _run(lang, code, gw, key, tmp_path)
    if lang == "bash" and code.lstrip().startswith("curl"):
        answer = json.loads(out)
        assert "error" not in answer and answer["data"], answer
        assert all(len(d["embedding"]) > 0 for d in answer["data"])
