"""The Docker tests' engine and images, made ahead of them: scripts/test.sh runs this in the background from
the start of the run, so that the builds (the biggest cost of the run: on vfs every build step copies the
whole image so far) overlap the other stages instead of following them.

    python -m tests.support.dockerbuild HOME     # dockerd on HOME/docker.sock, left running; then
    EG_TEST_DOCKER_HOME=HOME EG_TEST_DOCKER_PREBUILT=1 pytest tests/docker

With both variables the tests use this engine and the images built here (dockerkit.build_gateway);
scripts/test.sh stops the engine and removes HOME at the end of the run. The same steps as the session fixtures of
dockerkit.py, in the same order: both base images at once, then the default image, then the local one.
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.dockerkit import SERVICES, build_gateway, debootstrap_image, report, start_engine, torch_index

PYTHON_PACKAGES = ["python3", "python3-venv", "python3-pip", "ca-certificates"]


def main(home: Path) -> None:
    started = time.monotonic()
    engine = start_engine(home)
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
    report(f"engine and images ready in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
