"""The Kubernetes Deployment's container spec run as a container on a real Docker engine, as the kubelet
would run it: env from the ConfigMap and the Secret (the template, filled), read-only root filesystem,
the pod's non-root user, no capabilities, an emptyDir at /tmp and the teams ConfigMap mounted as the
kubelet mounts it (files behind a `..data` symlink, swapped atomically on an update). Changed for this
machine: the image, host networking, HOST and PORT (127.0.0.1 and a free port), the Redis URLs and the
upstream (the stand-in)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.teams.keys import hash_key, new_key
from tests.support.dockerbuild import Built, Engine
from tests.support.dockerkit import host_port, wait_health
from tests.support.processes import UPSTREAM_KEY, RedisServer, StandIn

pytestmark = pytest.mark.docker
K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def manifest(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return doc


def project_configmap(folder: Path, data: dict[str, str], version: int) -> None:
    """What the kubelet does with a ConfigMap volume: a timestamped folder, `..data` pointing at it
    (replaced by a rename), and each key a symlink through `..data`."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    stamped = folder / f"..2026_11_30_00_00_0{version}.000000000"
    stamped.mkdir()
    stamped.chmod(0o755)
    for name, text in data.items():
        (stamped / name).write_text(text)
    tmp = folder / "..data_tmp"
    tmp.symlink_to(stamped.name)
    os.replace(tmp, folder / "..data")
    for name in data:
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(f"..data/{name}")


def teams_yaml(template: str, key: str) -> str:
    config = yaml.safe_load(template)
    for team in config["teams"].values():
        team["keys"] = [hash_key(key)]
    return yaml.safe_dump(config)


def test_the_deployment_container_starts_answers_its_probes_and_reloads_teams(
    docker_engine: Engine, gateway_image: Built, standin: StandIn, redis_server: RedisServer, tmp_path: Path
) -> None:
    deployment = manifest("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {**manifest("configmap.yaml")["data"], **manifest("secret.example.yaml")["stringData"]}
    env.update({e["name"]: e["value"] for e in c["env"]})
    port = host_port()
    env.update(  # what this machine changes
        HOST="127.0.0.1",
        PORT=str(port),
        REDIS_URL=redis_server.url,
        LIMITS_REDIS_URL=redis_server.url.replace("/0", "/1"),
        DASHSCOPE_API_KEY=UPSTREAM_KEY,
        DASHSCOPE_BASE_URL=standin.dashscope_base,
    )
    teams_map = manifest("teams.yaml")["data"]
    first, second = new_key(), new_key()
    mounted = tmp_path / "teams"
    project_configmap(mounted, {"teams.yaml": teams_yaml(teams_map["teams.yaml"], first)}, 1)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    security = c["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
    options = ["--read-only", "--user", user, "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    options += ["--tmpfs", f"{mounts['tmp']['mountPath']}:rw,size=64m,mode=1777"]
    options += ["-v", f"{mounted}:{mounts['teams']['mountPath']}:ro"]
    options += ["--memory", c["resources"]["limits"]["memory"].replace("Gi", "g").replace("Mi", "m")]
    for name, value in env.items():
        options += ["-e", f"{name}={value}"]
    container = docker_engine.docker(
        "run", "-d", "--network", "host", *options, gateway_image.tag, *c["args"], timeout=600
    ).strip()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_health(docker_engine, container, "healthy")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert httpx.get(base + c[probe]["httpGet"]["path"]).status_code == 200, probe
        body = {"model": "text-embedding-v4", "input": "k8s", "dimensions": 64}

        def status(key: str) -> int:
            return httpx.post(
                base + "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {key}"}
            ).status_code

        assert status(first) == 200 and status(second) == 401
        # `kubectl apply` of the teams ConfigMap with a rotated key: the kubelet swaps ..data
        project_configmap(mounted, {"teams.yaml": teams_yaml(teams_map["teams.yaml"], second)}, 2)
        # Each worker re-reads the file on its own clock (TEAMS_RELOAD_S): within that period every worker has
        # the new teams, shown by ten answers in a row (spread over the workers) taking only the new key.
        deadline = time.monotonic() + 30
        streak = 0
        while streak < 10:
            assert time.monotonic() < deadline, docker_engine.logs(container)[-3000:]
            if status(first) == 401 and status(second) == 200:
                streak += 1
            else:
                streak = 0
                time.sleep(0.5)
        logs = docker_engine.logs(container)
        assert "teams reloaded (file changed)" in logs and first not in logs and second not in logs
        state = docker_engine.docker("inspect", "-f", "{{.RestartCount}} {{.State.Running}}", container).split()
        assert state == ["0", "true"]
    finally:
        docker_engine.docker("rm", "-f", container, check=False)
