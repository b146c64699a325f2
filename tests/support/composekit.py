"""The shipped docker-compose.yml on this machine: a fresh copy of the repository, the README's first-run
steps run in it, and the one change the machine forces on the compose file.

What this machine forces, and nothing else: images built here (the gateway from the shipped Dockerfile on a
debootstrap base; Redis and Prometheus from Debian packages), host networking with every service on
127.0.0.1 and a free port (no bridge, no Docker DNS: the Redis URLs and Prometheus' scrape target name
127.0.0.1), and no `ports:` (docker-compose v1 refuses them with host networking: dropped from a copy of the
file). Grafana is not started: no Grafana image or binary can be had here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.dockerbuild import Engine
from tests.support.dockerkit import require
from tests.support.processes import ROOT

README_SECTION = "## Run with Docker Compose"


def readme_steps() -> list[str]:
    """The commands of the README's first-run block (its first ```sh block), comments dropped."""
    text = (ROOT / "README.md").read_text()
    block = text.split(README_SECTION, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = (line.split("  #", 1)[0].strip() for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def fresh_clone(dest: Path) -> Path:
    """The repository's files as a clone would have them (tracked and new, never ignored ones like .env)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def set_env(path: Path, **values: str) -> None:
    """Edits .env as a user would: the given variables' lines replaced."""
    text = path.read_text()
    for key, value in values.items():
        text, n = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
        assert n == 1, key
    path.write_text(text)


@dataclass
class Stack:
    engine: Engine
    clone: Path
    ports: dict[str, int]
    project: str = field(default_factory=lambda: "eg" + uuid.uuid4().hex[:8])

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`docker compose ARGS` as the README says it, run as docker-compose (v1) on the machine's copy."""
        files = ["-f", str(self.clone / "compose.machine.yml"), "-f", str(self.clone / "compose.override.yml")]
        command = [require("docker-compose"), "-p", self.project, "--project-directory", str(self.clone), *files]
        result = subprocess.run(
            [*command, *args], cwd=self.clone, env=self.engine.env(), capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert result.returncode == 0, (
                f"docker compose {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return result

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def inspect(self, service: str, template: str) -> str:
        return self.engine.docker("inspect", "-f", template, self.container(service)).strip()


def machine_files(stack: Stack, images: dict[str, str]) -> None:
    """compose.machine.yml (the shipped file without `ports:`) and compose.override.yml (images, host
    networking, loopback ports) in the clone; a Prometheus folder whose scrape target is 127.0.0.1."""
    shipped = yaml.safe_load((stack.clone / "docker-compose.yml").read_text())
    for service in shipped["services"].values():
        service.pop("ports", None)
    (stack.clone / "compose.machine.yml").write_text(yaml.safe_dump(shipped, sort_keys=False))
    p = stack.ports
    redis = {name: f"redis://127.0.0.1:{p[name]}/0" for name in ("redis", "limits-redis")}

    def redis_service(name: str) -> dict[str, Any]:
        command = [*shipped["services"][name]["command"], "--port", str(p[name]), "--bind", "127.0.0.1"]
        health = {"test": ["CMD", "redis-cli", "-p", str(p[name]), "ping"]}
        return {"image": images["services"], "network_mode": "host", "command": command, "healthcheck": health}

    prometheus_dir = stack.clone.parent / "prometheus-machine"
    shutil.copytree(stack.clone / "deploy" / "prometheus", prometheus_dir)
    config = yaml.safe_load((prometheus_dir / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    del job["dns_sd_configs"]  # Docker's DNS needs a bridge network
    job["static_configs"] = [{"targets": [f"127.0.0.1:{p['gateway']}"]}]
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "2s"  # a quick test
    (prometheus_dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    prometheus = shipped["services"]["prometheus"]
    override = {
        "services": {
            "gateway": {
                "network_mode": "host",
                "environment": {
                    "HOST": "127.0.0.1",
                    "PORT": str(p["gateway"]),
                    "REDIS_URL": redis["redis"],
                    "LIMITS_REDIS_URL": redis["limits-redis"],
                },
            },
            "redis": redis_service("redis"),
            "limits-redis": redis_service("limits-redis"),
            "prometheus": {
                "image": images["services"],
                "network_mode": "host",
                "entrypoint": ["prometheus"],
                "command": [*prometheus["command"], f"--web.listen-address=127.0.0.1:{p['prometheus']}"],
                "volumes": [f"{prometheus_dir}:/etc/prometheus:ro"],
            },
            "grafana": {"network_mode": "host"},
        }
    }
    (stack.clone / "compose.override.yml").write_text(yaml.safe_dump(override, sort_keys=False))
