"""The Dockerfile, docker-compose.yml and .env.example. No Docker engine runs here, so each part is
proven by running it directly: `docker-compose config` on the compose file, the image's command and
health check with the compose file's environment, redis-server with the compose file's arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest
import redis
from conftest import UPSTREAM_KEY, RedisServer, StandIn, clean_env, free_port, stop, wait_http
from manifests import (
    ROOT,
    compose,
    compose_variables,
    docker_env,
    dockerfile,
    env_file,
    resolve,
    settings_env,
)

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
    assert set(services) == {"gateway", "redis", "prometheus", "grafana"}
    gateway = services["gateway"]
    assert set(gateway["environment"]) <= settings_env(), "a variable the gateway does not read"
    assert gateway["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
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


def test_image_builds_with_the_test_install_script() -> None:
    instructions = dockerfile()
    stages = [i for i in instructions if i.name == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    build_runs = [i.args for i in instructions if i.stage == 0 and i.name == "RUN"]
    assert build_runs == ["bash scripts/install.sh ${INSTALL_ARGS}"]
    test_script = (ROOT / "scripts" / "test.sh").read_text()
    assert "bash scripts/install.sh" in test_script
    assert "-c constraints.txt" in (ROOT / "scripts" / "install.sh").read_text()
    default_image = next(i.args for i in instructions if i.name == "ARG" and i.args.startswith("PYTHON_IMAGE="))
    assert default_image.split("=", 1)[1].split(":")[1].split("-")[1] == "slim"
    assert all(i.args.startswith("${PYTHON_IMAGE}") for i in stages)


def test_image_copies_everything_the_install_needs(tmp_path: Path) -> None:
    """Lay out the build stage's COPY instructions in a folder and build the package from it."""
    instructions = dockerfile()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore, ".dockerignore lets in only what it names"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for ins in (i for i in instructions if i.stage == 0 and i.name == "COPY"):
        *sources, dest = ins.args.split()
        for source in sources:
            assert source in allowed, f".dockerignore leaves {source} out of the build context"
            target = tmp_path / dest / Path(source).name if dest.endswith("/") else tmp_path / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / source, target)
    assert (tmp_path / "scripts" / "install.sh").is_file()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", "wheels", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("embedding_gateway-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "app").rglob("*.py")}
    assert modules <= packaged, sorted(modules - packaged)


def test_image_command_and_health_check_run_with_the_compose_environment(
    tmp_path: Path, standin: StandIn, redis_server: RedisServer
) -> None:
    """The runtime stage's ENTRYPOINT + CMD, its ENV, and the compose file's environment for the gateway:
    the process serves and the HEALTHCHECK command says so; once it stops, the health check fails."""
    instructions = dockerfile()
    last = max(i.stage for i in instructions)
    final = [i for i in instructions if i.stage == last]
    user = next(i.args for i in final if i.name == "USER")
    assert user.split(":")[0] not in ("root", "0")
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert script == {"embedding-gateway": "app.cli:main"}
    as_module = [sys.executable, "-m", "app.cli"]  # what the console script runs, from this worktree

    def command(ins_name: str) -> list[str]:
        args = next(i for i in final if i.name == ins_name).exec_form()
        return as_module + args[1:] if args[0] == "embedding-gateway" else args

    entrypoint, cmd = command("ENTRYPOINT"), next(i for i in final if i.name == "CMD").exec_form()
    healthcheck = command("HEALTHCHECK")
    env = docker_env(instructions, last)
    assert env["WORKERS"] and env["HOST"] == "0.0.0.0"
    port = free_port()
    gateway_env = compose()["services"]["gateway"]["environment"]
    env.update(
        {k: str(v) for k, v in gateway_env.items()},
        HOST="127.0.0.1",  # loopback only in tests
        PORT=str(port),
        PATH=os.environ["PATH"],
        REDIS_URL=redis_server.url,
        DASHSCOPE_API_KEY=UPSTREAM_KEY,
        DASHSCOPE_BASE_URL=standin.dashscope_base,
        GATEWAY_AUTH="off",
    )
    log = (tmp_path / "gateway.log").open("ab")
    proc = subprocess.Popen(entrypoint + cmd, cwd=ROOT, env=clean_env(**env), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        deadline = time.monotonic() + 60  # ready once every upstream is (the local model loads in the background)
        while httpx.get(f"http://127.0.0.1:{port}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.2)
        check = subprocess.run(healthcheck, cwd=ROOT, env=clean_env(PORT=str(port)), timeout=30)
        assert check.returncode == 0
    finally:
        stop(proc)
    assert proc.returncode == 0
    check = subprocess.run(healthcheck, cwd=ROOT, env=clean_env(PORT=str(port)), timeout=30)
    assert check.returncode == 1
    assert "multiprocess mode" in (tmp_path / "gateway.log").read_text()  # WORKERS > 1 from the image


def test_compose_interpolation_helper() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert resolve("${A}-${B:-two}-${EMPTY:-three}", env) == "1-two-three"
    with pytest.raises(ValueError, match="say so"):
        resolve("${B:?say so}", env)
