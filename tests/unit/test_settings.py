"""Settings: environment over the YAML file over defaults; `check-config` explains bad values by field and
never prints a secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from app.cli import main
from app.config.settings import CONFIG_ENV, Settings
from tests.support.processes import ROOT, UPSTREAM_KEY, clean_env


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (CONFIG_ENV, "DASHSCOPE_API_KEY", "OPENAI_API_KEY", "REDIS_URL", "REDIS_TIMEOUT_S", "CACHE_TTL_S"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_yaml_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "cache_ttl_s: 100\nredis_timeout_s: 0.5\nmax_input_items: 3\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.setenv("REDIS_TIMEOUT_S", "0.1")
    s = Settings()
    assert (s.cache_ttl_s, s.redis_timeout_s, s.max_input_items) == (100, 0.1, 3)
    assert s.max_body_bytes == 32 * 1024 * 1024  # default


def test_upstreams_from_the_file_replace_the_built_in_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        "upstreams:\n  dashscope:\n    kind: dashscope\n    base_url: http://127.0.0.1:9/api/v1\n"
        "    api_key_env: MY_KEY\n    timeout_s: 0.5\n",
    )
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.setenv("MY_KEY", "sk-from-env")
    cfg = Settings().upstream_configs()["dashscope"]
    assert (cfg.base_url, cfg.timeout_s, cfg.key()) == ("http://127.0.0.1:9/api/v1", 0.5, "sk-from-env")
    assert Settings().upstream_configs()["openai"].kind == "openai"


def test_fixed_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-a")
    monkeypatch.setenv("DASHSCOPE_BASE_URL", "https://dashscope-intl.aliyuncs.com/api/v1/")
    monkeypatch.setenv("REDIS_URL", "redis://:pw@127.0.0.1:6379/0")
    s = Settings()
    cfg = s.upstream_configs()["dashscope"]
    assert (cfg.key(), cfg.base_url) == ("sk-a", "https://dashscope-intl.aliyuncs.com/api/v1")
    assert s.redis_url is not None and "pw" not in repr(s)


@pytest.mark.parametrize(
    ("env", "asked"),
    [
        ({}, "base64"),  # OpenAI's own API: base64, as its SDK asks
        ({"OPENAI_BASE_URL": "https://api.openai.com/v1/"}, "base64"),
        ({"OPENAI_BASE_URL": "http://vllm:8000/v1"}, "float"),  # any other server: float, which all take
        ({"OPENAI_BASE_URL": "http://vllm:8000/v1", "OPENAI_ENCODING_FORMAT": "base64"}, "base64"),
        ({"OPENAI_ENCODING_FORMAT": "float"}, "float"),
        ({"OPENAI_ENCODING_FORMAT": "auto", "OPENAI_BASE_URL": "http://vllm:8000/v1"}, "float"),
    ],
)
def test_the_built_in_openai_upstream_asks_base64_from_openai_only(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], asked: str
) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_ENCODING_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().upstream_configs()["openai"].encoding_format == asked


def check_config(tmp_path: Path, config: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "app.cli", "check-config"]
    if config is not None:
        args += ["--config", str(write(tmp_path, config))]
    return subprocess.run(args, cwd=ROOT, env=clean_env(**env), capture_output=True, text=True, timeout=60)


def test_check_config_prints_settings_with_secrets_masked(tmp_path: Path) -> None:
    config = (
        "upstreams:\n  extra:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n    api_key: sk-file-secret\n"
    )
    out = check_config(
        tmp_path, config, DASHSCOPE_API_KEY=UPSTREAM_KEY, REDIS_URL="redis://:hunter2@127.0.0.1:1/0", CACHE_TTL_S="60"
    )
    assert out.returncode == 0, out.stderr
    dump = orjson.loads(out.stdout)
    assert dump["cache_ttl_s"] == 60
    assert dump["dashscope_api_key"] == "**********" and dump["upstreams"]["extra"]["api_key"] == "**********"
    for secret in (UPSTREAM_KEY, "sk-file-secret", "hunter2"):
        assert secret not in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("config", "env", "field"),
    [
        ("redis_timeout_s: soon\n", {}, "redis_timeout_s"),
        ("", {"REDIS_TIMEOUT_S": "-1"}, "redis_timeout_s"),
        ("", {"MAX_BODY_BYTES": "10"}, "max_body_bytes"),
        ("", {"DASHSCOPE_BASE_URL": "dashscope.example"}, "dashscope_base_url"),
        ("cache_namespace: 'has space'\n", {}, "cache_namespace"),
        ("log_level: loud\n", {}, "log_level"),
        ("no_such_setting: 1\n", {}, "no_such_setting"),
        ("upstreams:\n  x:\n    kind: grpc\n", {}, "upstreams.x.kind"),
        ("upstreams:\n  x:\n    kind: openai\n    timeout_s: 0\n", {}, "upstreams.x.timeout_s"),
        ("upstreams:\n  x:\n    kind: openai\n    encoding_format: b64\n", {}, "upstreams.x.encoding_format"),
        ("upstreams:\n  x:\n    kind: dashscope\n    encoding_format: base64\n", {}, "upstreams.x.encoding_format"),
        (
            "models:\n  text-embedding-v4:\n    max_batch: 0\n",
            {"DASHSCOPE_API_KEY": "k"},
            "models.text-embedding-v4.max_batch",
        ),
        ("models:\n  mine:\n    upstream: nowhere\n    default_dimension: 8\n", {}, "models.mine.upstream"),
        ("- a list\n", {}, "mapping"),
    ],
)
def test_bad_values_exit_naming_the_field(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    config: str,
    env: dict[str, str],
    field: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(CONFIG_ENV, "")  # the CLI sets it from --config; restored after the test
    with pytest.raises(SystemExit) as info:
        main(["check-config", "--config", str(write(tmp_path, config or "{}\n"))])
    message = info.value.code
    assert isinstance(message, str)  # sys.exit(message): status 1, the message on stderr
    assert field in message
    assert capsys.readouterr().out == ""


def test_a_bad_value_exits_non_zero_with_the_field_on_stderr(tmp_path: Path) -> None:
    out = check_config(tmp_path, "redis_timeout_s: soon\n")
    assert out.returncode == 1 and out.stdout == ""
    assert "redis_timeout_s" in out.stderr and "Traceback" not in out.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "app.cli", "check-config", "--config", str(tmp_path / "absent.yaml")]
    out = subprocess.run(args, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_serve_refuses_to_start_on_bad_settings(tmp_path: Path) -> None:
    config = write(tmp_path, "models:\n  text-embedding-v4:\n    dimensions: [64]\n")
    args = [sys.executable, "-m", "app.cli", "serve", "--port", "9", "--config", str(config)]
    out = subprocess.run(
        args,
        cwd=ROOT,
        env=clean_env(DASHSCOPE_API_KEY="k", GATEWAY_AUTH="off"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "models.text-embedding-v4: default_dimension 1024 is not among [64]" in out.stderr
    assert "Traceback" not in out.stderr
