"""The shipped Dockerfile built on a real Docker engine, both variants: build time and size (reported in
the run's log), a CPU-only torch in the local-model variant, which serves its model within the memory
the documentation gives it, and a worker killed by the OOM killer failing the image's health check."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.support.dockerbuild import Built, Engine, report
from tests.support.dockerkit import host_port, teams_dir, wait_health
from tests.support.manifests import env_file

pytestmark = pytest.mark.docker


def run_gateway(engine: Engine, image: str, config: Path, port: int, *options: str) -> str:
    """The image as compose runs it: its entrypoint, command and HEALTHCHECK; host network on 127.0.0.1."""
    return engine.docker(
        "run",
        "-d",
        "--network",
        "host",
        "-v",
        f"{config}:/etc/embedding-gateway:ro",
        "-e",
        "EMBEDDING_GATEWAY_CONFIG=/etc/embedding-gateway/teams.yaml",
        "-e",
        "HOST=127.0.0.1",
        "-e",
        f"PORT={port}",
        *options,
        image,
        timeout=600,  # vfs copies the whole image for a new container
    ).strip()


def test_default_image_is_small_and_runs_as_its_user(docker_engine: Engine, gateway_image: Built) -> None:
    assert gateway_image.size_mb < 600, "the base image is about 290 MB here (python:3.11-slim: about 150 MB)"
    user = docker_engine.docker("image", "inspect", "-f", "{{.Config.User}}", gateway_image.tag).strip()
    assert user == "10001:10001"
    out = docker_engine.docker("run", "--rm", "--network", "none", gateway_image.tag, "create-key", "--team", "ops")
    assert out.startswith("eg-")


def test_local_image_holds_cpu_torch_and_serves_its_model_within_the_documented_memory(
    docker_engine: Engine, local_image: Built, tmp_path: Path
) -> None:
    """torch is the CPU build; with the default workers and the memory limit .env.example gives the local
    image, the model loads in every worker and serves, and no worker is killed for memory."""
    assert local_image.size_mb < 2500, "the CUDA build of torch made it about 5.7 GB"
    documented = env_file()
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    limit, workers = re.search(
        r"\(embedding-gateway:local\)[^:]*: give it (\w+) for (\d+) workers", text, re.S
    ).groups()
    assert workers == documented["GATEWAY_WORKERS"]
    config, key = teams_dir(tmp_path / "teams")
    port = host_port()
    container = run_gateway(docker_engine, local_image.tag, config, port, "--memory", limit, "-e", f"WORKERS={workers}")
    try:
        probe = (
            "import importlib.metadata as m, torch; "
            "print(torch.__version__, torch.cuda.is_available(), "
            "sorted(d.metadata['Name'] for d in m.distributions() if d.metadata['Name'].lower().startswith('nvidia')))"
        )
        assert docker_engine.docker("exec", container, "python", "-c", probe).split() == ["2.13.0+cpu", "False", "[]"]
        wait_health(docker_engine, container, "healthy", timeout=600)
        deadline = time.monotonic() + 300
        while httpx.get(f"http://127.0.0.1:{port}/readyz").status_code != 200:  # the model loads in each worker
            assert time.monotonic() < deadline, docker_engine.logs(container)[-3000:]
            time.sleep(1)
        for i in range(20):  # new connections: both workers answer (and load their model)
            body = {"model": "all-minilm-l6-v2", "input": [f"local {i}", f"model {i}"]}
            headers = {"Authorization": f"Bearer {key}"}
            reply = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json=body, headers=headers, timeout=120)
            assert reply.status_code == 200, reply.text
            assert len(reply.json()["data"][0]["embedding"]) == 384
        used = docker_engine.docker("stats", "--no-stream", "--format", "{{.MemUsage}}", container).strip()
        report(f"local image, {workers} workers, model loaded and serving: memory {used}")
        assert docker_engine.docker("inspect", "-f", "{{.State.Health.Status}}", container).strip() == "healthy"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200  # no worker killed for memory
    finally:
        docker_engine.docker("rm", "-f", container, check=False, timeout=600)


def test_a_worker_killed_by_the_oom_killer_fails_the_health_check(
    docker_engine: Engine, gateway_image: Built, tmp_path: Path
) -> None:
    """A worker made the OOM killer's first choice, then the container pushed past its memory limit: the
    supervisor replaces the worker, and the image's HEALTHCHECK turns unhealthy."""
    config, _ = teams_dir(tmp_path / "teams")
    port = host_port()
    options = ["--memory", "400m", "-e", "WORKERS=2", "--health-interval", "1s", "--health-retries", "1"]
    container = run_gateway(docker_engine, gateway_image.tag, config, port, *options)
    try:
        wait_health(docker_engine, container, "healthy")
        find = (  # the workers, by their command line (no procps in the image)
            "import os; print(*[p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid() "
            "and b'spawn_main' in open(f'/proc/{p}/cmdline', 'rb').read()])"
        )
        pids = docker_engine.docker("exec", container, "python", "-c", find).split()
        assert len(pids) == 2, pids
        hog = f"echo 1000 > /proc/{pids[0]}/oom_score_adj; python3 -c 'b = bytearray(300 * 2**20)'; true"
        docker_engine.docker("exec", container, "sh", "-c", hog)
        wait_health(docker_engine, container, "unhealthy", timeout=60)
        reply = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert reply.status_code == 503 and "OOM" in reply.text
    finally:
        docker_engine.docker("rm", "-f", container, check=False, timeout=600)
