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
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bench.procs import stop
from tests.support.processes import ROOT, clean_env

MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
TORCH = "torch==2.13.0+cpu"
SERVICES = ["redis-server", "prometheus"]
# For developers: the folder of a dockerd started by an earlier run (docker.sock in it), reused with its
# images; CI always starts a new engine.
REUSE = "EG_TEST_DOCKER_HOME"
# Set by scripts/test.sh when tests/support/dockerbuild.py built the gateway images in this run's engine
# (REUSE): the tests use them as they are (a developer's reused engine may hold images of older code).
PREBUILT = "EG_TEST_DOCKER_PREBUILT"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


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


def report(line: str) -> None:
    """A measurement for the log of the run (build times and sizes), past pytest's capture."""
    sys.__stdout__.write(f"\n[docker] {line}\n")
    sys.__stdout__.flush()


@dataclass
class Engine:
    home: Path
    proc: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"unix://{self.home}/docker.sock"

    def env(self, **extra: str) -> dict[str, str]:
        # The legacy builder: no buildx plugin here, and the build needs only --network host and build args.
        return clean_env(DOCKER_HOST=self.host, DOCKER_BUILDKIT="0", COMPOSE_DOCKER_CLI_BUILD="0", **extra)

    def docker(self, *args: str, timeout: float = 120, check: bool = True, **kw: object) -> str:
        result = subprocess.run(
            [require("docker"), *args], env=self.env(), capture_output=True, text=True, timeout=timeout, **kw
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args[:3])}... failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result.stdout

    def logs(self, container: str) -> str:
        result = subprocess.run(
            [require("docker"), "logs", container], env=self.env(), capture_output=True, text=True, timeout=60
        )
        return result.stdout + result.stderr

    def size_mb(self, image: str) -> int:
        return int(self.docker("image", "inspect", "-f", "{{.Size}}", image)) // 1_000_000


def start_engine(home: Path) -> Engine:
    dockerd = require("dockerd")
    home.mkdir(parents=True, exist_ok=True)
    args = [
        dockerd,
        "--storage-driver=vfs",
        "--iptables=false",
        "--ip-masq=false",
        "--bridge=none",
        "-H",
        f"unix://{home}/docker.sock",
        "--data-root",
        str(home / "data"),
        "--exec-root",
        str(home / "exec"),
        "--pidfile",
        str(home / "docker.pid"),
    ]
    log = (home / "dockerd.log").open("ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    engine = Engine(home, proc)
    deadline = time.monotonic() + 60
    while engine.docker("info", check=False, timeout=10).strip() == "":
        assert proc.poll() is None, (home / "dockerd.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "dockerd did not answer within 60 s"
        time.sleep(0.5)
    return engine


def stop_engine(engine: Engine) -> None:
    subprocess.run(
        [require("docker"), "rm", "-f", "-v", *engine.docker("ps", "-aq", check=False).split()],
        env=engine.env(),
        capture_output=True,
        timeout=120,
    )
    stop(engine.proc, timeout=60)
    shutil.rmtree(engine.home / "data", ignore_errors=True)


def debootstrap_image(engine: Engine, name: str, packages: list[str], work: Path, *, pip_ca: bool = False) -> str:
    """`debootstrap --variant=minbase` of Debian bookworm with these packages, imported as image `name`."""
    if engine.docker("image", "inspect", name, check=False).strip() not in ("", "[]"):
        return name  # an engine reused from an earlier run (REUSE)
    root = work / name
    started = time.monotonic()
    result = subprocess.run(
        [
            require("debootstrap"),
            "--variant=minbase",
            f"--include={','.join(packages)}",
            SUITE,
            str(root),
            MIRROR,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    root.chmod(0o755)  # the image's "/": a non-root user must be able to enter it
    if pip_ca:  # test-only: the registries' TLS is re-signed here (see the module's docstring)
        shutil.copy(HOST_CA, root / "etc/ssl/certs/ca-certificates.crt")
        (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        [require("docker"), "import", "-", name], stdin=tar.stdout, env=engine.env(), capture_output=True, timeout=600
    )
    tar.wait()
    assert imported.returncode == 0, imported.stderr
    shutil.rmtree(root, ignore_errors=True)
    report(f"base image {name}: debootstrap + import {time.monotonic() - started:.0f} s, {engine.size_mb(name)} MB")
    return name


@dataclass
class Built:
    tag: str
    seconds: float
    size_mb: int


def build_gateway(engine: Engine, tag: str, python_image: str, *build_args: str) -> Built:
    """`docker build` of the shipped Dockerfile from the repository (its .dockerignore decides the context)."""
    if os.environ.get(PREBUILT) and engine.docker("image", "inspect", tag, check=False).strip() not in ("", "[]"):
        report(f"image {tag}: built by tests/support/dockerbuild.py in this run, {engine.size_mb(tag)} MB")
        return Built(tag, 0.0, engine.size_mb(tag))
    args = ["build", "--network", "host", "-t", tag, "--build-arg", f"PYTHON_IMAGE={python_image}"]
    for arg in build_args:
        args += ["--build-arg", arg]
    started = time.monotonic()
    engine.docker(*args, str(ROOT), timeout=1800)
    built = Built(tag, time.monotonic() - started, engine.size_mb(tag))
    report(f"image {tag} ({' '.join(build_args) or 'default'}): built in {built.seconds:.0f} s, {built.size_mb} MB")
    return built


@dataclass
class TorchIndex:
    url: str
    server: http.server.ThreadingHTTPServer


@contextlib.contextmanager
def torch_index(work: Path) -> Iterator[TorchIndex]:
    """A one-project PEP 503 index on 127.0.0.1 with the CPU torch wheel pip finds on this machine (the
    Dockerfile's default index, download.pytorch.org, is not reachable from the test machines)."""
    project = work / "torch"
    project.mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", TORCH, "-d", str(project)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"pip could not find {TORCH} here:\n{result.stderr[-2000:]}"
    links = "".join(f'<a href="{w.name}">{w.name}</a>\n' for w in project.glob("*.whl"))
    (project / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, directory=str(work), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield TorchIndex(f"http://127.0.0.1:{server.server_address[1]}/", server)
    finally:
        server.shutdown()


# ---------------------------------------------------------------- session fixtures (imported by conftest)


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    reuse = os.environ.get(REUSE)
    if reuse:  # a developer's engine of an earlier run: its images are reused, it is left running
        yield Engine(Path(reuse), subprocess.Popen(["true"]))
        return
    engine = start_engine(tmp_path_factory.mktemp("docker"))
    yield engine
    stop_engine(engine)


@pytest.fixture(scope="session")
def base_images(docker_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[str]]]:
    """Both debootstraps at once (about 2 minutes each, mostly waiting on the mirror), made once per run."""
    work = tmp_path_factory.mktemp("roots")
    python = ["python3", "python3-venv", "python3-pip", "ca-certificates"]
    with ThreadPoolExecutor(2) as pool:
        yield {
            "python": pool.submit(debootstrap_image, docker_engine, "eg-test-python", python, work, pip_ca=True),
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
