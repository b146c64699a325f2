"""A Docker engine of the tests' own, and the images they need, built from Debian packages.

No container registry is reachable from the test machines, so:
- dockerd (Debian's docker.io) is started by the session as root, with its own socket and data root under
  the session's temporary folder, storage driver vfs, no bridge and no iptables: containers use the host's
  network and listen on 127.0.0.1 only. It is stopped and its data removed at the end.
- The Python base image is a debootstrap of Debian bookworm (python3, venv, pip) imported with
  `docker import` and passed to the shipped Dockerfile as PYTHON_IMAGE. The package registries' TLS is
  re-signed on these machines, so the test's base image (never the shipped Dockerfile) carries the host's
  CA bundle and a pip.conf naming it.
- Redis and Prometheus run from one more debootstrap image with Debian's redis-server and prometheus.
- torch for the local-model variant comes from a PEP 503 index served by the test on 127.0.0.1 (the
  Dockerfile's TORCH_INDEX_URL argument), holding the CPU wheel that pip finds on this machine.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from bench.procs import stop
from tests.support.dockerbuild import (
    PYTHON_PACKAGES,
    REUSE,
    SERVICES,
    Built,
    Engine,
    build_gateway,
    debootstrap_image,
    start_engine,
    torch_index,
)


def require(tool: str) -> str:
    """The tool's path; missing, the test fails in CI (scripts/test.sh installs it) and skips elsewhere."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed: scripts/test.sh installs it (apt-get)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if os.geteuid() != 0:
        message = "the Docker tests start their own dockerd, which needs root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def host_port() -> int:
    """A free loopback port for a container on the host network, below the kernel's ephemeral range: the
    container binds it seconds later (vfs copies the whole image first), and meanwhile other tests (the
    clients stage beside the docker stage, e2e's load tests) open thousands of connections, whose source ports
    the kernel picks from that range."""
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(10_000, first_ephemeral)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def stop_engine(engine: Engine) -> None:
    subprocess.run(
        [require("docker"), "rm", "-f", "-v", *engine.docker("ps", "-aq", check=False).split()],
        env=engine.env(),
        capture_output=True,
        timeout=120,
    )
    stop(engine.proc, timeout=60)
    shutil.rmtree(engine.home / "data", ignore_errors=True)


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    require("docker")
    reuse = os.environ.get(REUSE)
    if reuse:  # a developer's engine of an earlier run: its images are reused, it is left running
        yield Engine(Path(reuse), subprocess.Popen(["true"]))
        return
    require("dockerd")
    engine = start_engine(tmp_path_factory.mktemp("docker"))
    yield engine
    stop_engine(engine)


@pytest.fixture(scope="session")
def base_images(docker_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[str]]]:
    """Both debootstraps at once (about 2 minutes each, mostly waiting on the mirror), made once per run."""
    if not os.environ.get(REUSE):
        require("debootstrap")
    work = tmp_path_factory.mktemp("roots")
    with ThreadPoolExecutor(2) as pool:
        yield {
            "python": pool.submit(
                debootstrap_image, docker_engine, "eg-test-python", PYTHON_PACKAGES, work, pip_ca=True
            ),
            # Debian's redis-server and prometheus, for the compose file's redis and prom/prometheus images
            "services": pool.submit(debootstrap_image, docker_engine, "eg-test-services", SERVICES, work),
        }


@pytest.fixture(scope="session")
def python_image(base_images: dict[str, Future[str]]) -> str:
    return base_images["python"].result()


@pytest.fixture(scope="session")
def services_image(base_images: dict[str, Future[str]]) -> str:
    return base_images["services"].result()


@pytest.fixture(scope="session")
def gateway_builds(
    docker_engine: Engine, base_images: dict[str, Future[str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Built]]]:
    """Both variants, from the first test that needs either: the default one first, then the local one
    in the background while the tests of the default image run. One after the other, the local build
    reuses every step the two share (on vfs each step copies the whole image so far)."""
    with contextlib.ExitStack() as stack:
        index = stack.enter_context(torch_index(tmp_path_factory.mktemp("torch-index")))
        pool = stack.enter_context(ThreadPoolExecutor(1))
        python = base_images["python"]
        local_args = ("INSTALL_ARGS=--local", f"TORCH_INDEX_URL={index.url}")
        yield {
            "default": pool.submit(lambda: build_gateway(docker_engine, "embedding-gateway:test", python.result())),
            "local": pool.submit(
                lambda: build_gateway(docker_engine, "embedding-gateway:test-local", python.result(), *local_args)
            ),
        }


@pytest.fixture(scope="session")
def gateway_image(gateway_builds: dict[str, Future[Built]]) -> Built:
    return gateway_builds["default"].result()


@pytest.fixture(scope="session")
def local_image(gateway_builds: dict[str, Future[Built]]) -> Built:
    return gateway_builds["local"].result()


def teams_dir(path: Path, team: str = "search", **limits: object) -> tuple[Path, str]:
    """A folder holding teams.yaml with one team and a new key (hash only in the file): (folder, key)."""
    from app.teams.keys import hash_key, new_key

    key = new_key()
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)  # read by the image's user 10001
    body = {"teams": {team: {"keys": [hash_key(key)], **limits}}}
    (path / "teams.yaml").write_text(yaml.safe_dump(body))
    return path, key


def wait_health(engine: Engine, container: str, want: str, timeout: float = 180) -> None:
    """Until the container's own HEALTHCHECK reports `want` (healthy, unhealthy)."""
    deadline = time.monotonic() + timeout
    while (status := engine.docker("inspect", "-f", "{{.State.Health.Status}}", container).strip()) != want:
        running = engine.docker("inspect", "-f", "{{.State.Running}}", container).strip()
        assert running == "true" and time.monotonic() < deadline, (status, engine.logs(container)[-3000:])
        time.sleep(1)
