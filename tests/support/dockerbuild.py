"""The Docker tests' engine and images, made ahead of them: scripts/test.sh runs this in the background from
the very start of the run, before the package is installed (standard library only: any python3 runs it), so
that the builds (the longest chain of the run: on vfs every build step copies the whole image so far)
overlap the installs and the other stages instead of following them.

    python3 -m tests.support.dockerbuild HOME     # dockerd on HOME/docker.sock, left running; then
    EG_TEST_DOCKER_HOME=HOME EG_TEST_DOCKER_PREBUILT=1 pytest tests/docker

With both variables the tests use this engine and the images built here (build_gateway); scripts/test.sh
stops the engine and removes HOME at the end of the run. The session fixtures of tests/support/dockerkit.py
take the same steps in the same order: both base images at once, then the default image, then the local one.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.support.environment import clean_env

ROOT = Path(__file__).resolve().parents[2]
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
TORCH = "torch==2.13.0+cpu"
SERVICES = ["redis-server", "prometheus"]
# The folder of a dockerd started before the tests (docker.sock in it), used with its images: main() below
# (scripts/test.sh), or a developer's engine of an earlier run.
REUSE = "EG_TEST_DOCKER_HOME"
# Set by scripts/test.sh, whose main() builds the images in the REUSE engine while the tests run: each test
# waits for the image it needs (awaited) and uses it as it is (a developer's reused engine may hold images of
# older code: without this the gateway images are built again).
PREBUILT = "EG_TEST_DOCKER_PREBUILT"
# Written in HOME by main() when it ends, built or not.
DONE = "build.done"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def tool(name: str) -> str:
    """The tool's path (tests/support/dockerkit.py's require() fails or skips the tests before this)."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: scripts/test.sh installs it (apt-get)")
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
            [tool("docker"), *args], env=self.env(), capture_output=True, text=True, timeout=timeout, **kw
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args[:3])}... failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result.stdout

    def logs(self, container: str) -> str:
        result = subprocess.run(
            [tool("docker"), "logs", container], env=self.env(), capture_output=True, text=True, timeout=60
        )
        return result.stdout + result.stderr

    def has(self, image: str) -> bool:
        return self.docker("image", "inspect", image, check=False).strip() not in ("", "[]")

    def size_mb(self, image: str) -> int:
        return int(self.docker("image", "inspect", "-f", "{{.Size}}", image)) // 1_000_000


def start_engine(home: Path) -> Engine:
    dockerd = tool("dockerd")
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


def awaited(engine: Engine, image: str) -> bool:
    """Whether the engine has the image. With PREBUILT, main() may still be building it in this engine (the
    docker stage starts when e2e ends, each test when its image is there): then this waits until the image
    is there (True) or main() has ended without it (False: the caller builds it)."""
    while not engine.has(image):
        if not os.environ.get(PREBUILT) or (engine.home / DONE).exists():
            return engine.has(image)
        time.sleep(2)
    return True


def debootstrap_image(engine: Engine, name: str, packages: list[str], work: Path, *, pip_ca: bool = False) -> str:
    """`debootstrap --variant=minbase` of Debian bookworm with these packages, imported as image `name`."""
    if awaited(engine, name):
        return name  # built by main() in this run (PREBUILT), or an engine reused from an earlier run (REUSE)
    root = work / name
    started = time.monotonic()
    result = subprocess.run(
        [
            tool("debootstrap"),
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
        [tool("docker"), "import", "-", name], stdin=tar.stdout, env=engine.env(), capture_output=True, timeout=600
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
    if os.environ.get(PREBUILT) and awaited(engine, tag):
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


PYTHON_PACKAGES = ["python3", "python3-venv", "python3-pip", "ca-certificates"]


def main(home: Path) -> None:
    started = time.monotonic()
    engine = start_engine(home)
    try:
        build(engine)
    finally:
        (home / DONE).write_text(f"{time.monotonic() - started:.0f} s\n")
    report(f"engine and images ready in {time.monotonic() - started:.0f} s")


def build(engine: Engine) -> None:
    with tempfile.TemporaryDirectory(prefix="eg-dockerbuild-") as scratch:
        work = Path(scratch)
        with ThreadPoolExecutor(2) as pool:
            python = pool.submit(debootstrap_image, engine, "eg-test-python", PYTHON_PACKAGES, work, pip_ca=True)
            services = pool.submit(debootstrap_image, engine, "eg-test-services", SERVICES, work)
            image = python.result()
            build_gateway(engine, "embedding-gateway:test", image)
            with torch_index(work / "torch-index") as index:
                local = ("INSTALL_ARGS=--local", f"TORCH_INDEX_URL={index.url}")
                build_gateway(engine, "embedding-gateway:test-local", image, *local)
            services.result()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
