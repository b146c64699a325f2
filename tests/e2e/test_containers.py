"""The Dockerfile, docker-compose.yml and .env.example. No Docker engine runs here, so each part is
proven by running it directly: `docker-compose config` on the compose file, the image's command and
health check with the compose file's environment, redis-server with the compose file's arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from tests.support.manifests import (
    ROOT,
    compose,
    compose_variables,
    docker_env,
    dockerfile,
    env_file,
    resolve,
    settings_env,
)
from tests.support.processes import clean_env, free_port, stop

COMPOSE = ROOT / "docker-compose.yml"


def docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed: scripts/test.sh installs it in CI")
        pytest.skip("docker-compose is not installed (scripts/test.sh installs it)")
    return subprocess.run(
        [binary, "--project-directory", str(ROOT), "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )


def test_docker_compose_accepts_the_file_with_the_example_env() -> None:
    result = docker_compose("--env-file", str(ROOT / ".env.example"), "config", "-q")
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_start_grafana_without_a_password(tmp_path: Path) -> None:
    env = tmp_path / "no-password.env"
    env.write_text("DASHSCOPE_API_KEY=sk-x\n")
    result = docker_compose("--env-file", str(env), "config", "-q")
    assert result.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_env_example_documents_every_variable_and_nothing_else() -> None:
    example = env_file()
    assert set(example) == compose_variables()
    text = (ROOT / ".env.example").read_text()
    for key in example:  # each setting has a comment right above it or in its block
        before = text.split(f"\n{key}=")[0]
        assert before.rstrip().splitlines()[-1].startswith("#") or "# ---" in before, key
    assert not example["DASHSCOPE_API_KEY"] and not example["OPENAI_API_KEY"]
    assert ".env\n" in (ROOT / ".gitignore").read_text()


def test_compose_services_fit_together() -> None:
    services = compose()["services"]
    assert set(services) == {"gateway", "redis", "limits-redis", "prometheus", "grafana"}
    gateway = services["gateway"]
    assert set(gateway["environment"]) <= settings_env(), "a variable the gateway does not read"
    assert gateway["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert gateway["environment"]["LIMITS_REDIS_URL"].startswith("redis://limits-redis:")
    for redis_service in ("redis", "limits-redis"):
        assert gateway["depends_on"][redis_service]["condition"] == "service_healthy"
    policy = {name: services[name]["command"] for name in ("redis", "limits-redis")}
    assert policy["redis"][policy["redis"].index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert policy["limits-redis"][policy["limits-redis"].index("--maxmemory-policy") + 1] == "noeviction"
    # the teams file: a mounted folder (an edited file is seen), read-only, named by the config variable
    config = gateway["environment"]["EMBEDDING_GATEWAY_CONFIG"]
    mounts = {v.split(":")[1]: v.split(":") for v in gateway["volumes"]}
    source, _, mode = mounts[config.rsplit("/", 1)[0]]
    assert mode == "ro" and (ROOT / source / "teams.example.yaml").is_file()
    port = docker_env(dockerfile(), 1)["PORT"]
    assert all(p.endswith(f":{port}") for p in gateway["ports"])
    prometheus_config = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert "names: [gateway]" in prometheus_config and f"port: {port}" in prometheus_config
    volumes = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    assert volumes["./deploy/prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    for service in ("gateway", "redis"):
        assert services[service]["mem_limit"]
    for service in services.values():
        for mapping in service.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), "ports stay on this machine unless .env opens them"


def test_redis_runs_with_the_compose_arguments_and_evicts_instead_of_failing(tmp_path: Path) -> None:
    """redis-server with the compose file's command (maxmemory lowered through .env to fill it fast):
    when the cache is full, old vectors are evicted and writes keep succeeding."""
    command = compose({**env_file(), "REDIS_MAXMEMORY": "2mb"})["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: run scripts/test.sh"
    port = free_port()
    proc = subprocess.Popen(
        [binary, *command[1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, socket_timeout=5)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                subprocess.run(["sleep", "0.05"])
        config = client.config_get("*")
        assert config["maxmemory-policy"] == "allkeys-lru" and int(config["maxmemory"]) == 2 * 1024 * 1024
        assert config["save"] == "" and config["appendonly"] == "no"
        vector = os.urandom(4096)
        for batch in range(10):  # 10 MB into 2 MB
            pipe = client.pipeline(transaction=False)
            for i in range(256):
                pipe.set(f"eg:v1:{batch}:{i}", vector, ex=3600)
            assert all(pipe.execute())
        assert int(client.info("stats")["evicted_keys"]) > 0
        assert client.dbsize() < 10 * 256
    finally:
        stop(proc)


def test_image_builds_with_the_test_install_script_and_pins_cpu_torch() -> None:
    instructions = dockerfile()
    stages = [i for i in instructions if i.name == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    build_runs = [i.args for i in instructions if i.stage == 0 and i.name == "RUN"]
    assert build_runs == ["bash scripts/install.sh ${INSTALL_ARGS}"]
    assert "bash scripts/install.sh" in (ROOT / "scripts" / "test.sh").read_text()
    install = (ROOT / "scripts" / "install.sh").read_text()
    assert "-c constraints.txt" in install and '"torch==2.13.0+cpu"' in install
    args = dict(i.args.split("=", 1) for i in instructions if i.name == "ARG" and "=" in i.args)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert args["PYTHON_IMAGE"].split(":")[1].split("-")[1] == "slim"
    assert all(i.args.startswith("${PYTHON_IMAGE}") for i in stages)


def test_compose_interpolation_helper() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert resolve("${A}-${B:-two}-${EMPTY:-three}", env) == "1-two-three"
    with pytest.raises(ValueError, match="say so"):
        resolve("${B:?say so}", env)
