"""deploy/k8s: the manifests parse, reference each other consistently, and match the app (its routes,
port, settings) and the image (its user, its port)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from app.config.settings import Settings
from app.main import create_app
from tests.support.manifests import ROOT, docker_env, dockerfile, settings_env

K8S = ROOT / "deploy" / "k8s"
TEAMS_CONFIGMAP = "embedding-gateway-teams"
MB = 1_000_000
# What one worker holds besides its caches (a Python process with the app loaded; measured in the
# Docker tests' container, about 100 MB).
WORKER_BASE_BYTES = 120 * MB


def load(name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert len(docs) == 1, name
    doc: dict[str, Any] = docs[0]
    return doc


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        doc = load(path.name)
        assert {"apiVersion", "kind", "metadata"} <= set(doc), path.name
        teams = doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == TEAMS_CONFIGMAP
        out["TeamsConfigMap" if teams else doc["kind"]] = doc
    return out


@pytest.fixture(scope="module")
def routes() -> set[str]:
    """The ops paths the app answers (anything but 404), asked of the app itself."""
    with TestClient(create_app(Settings())) as client:
        return {p for p in ("/readyz", "/healthz", "/metrics") if client.get(p).status_code != 404}


def container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (c,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(c)


def test_every_part_is_there(manifests: dict[str, dict[str, Any]]) -> None:
    assert set(manifests) == {
        "ConfigMap",
        "TeamsConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
    }
    kustomization = load("kustomization.yaml")
    assert all((K8S / r).is_file() for r in kustomization["resources"])
    # the Secret is a template to fill, the ServiceMonitor needs the Prometheus Operator's CRD
    assert {"secret.example.yaml", "servicemonitor.yaml"}.isdisjoint(kustomization["resources"])
    assert (K8S / "README.md").is_file()


def test_probes_and_ports_match_the_app(manifests: dict[str, dict[str, Any]], routes: set[str]) -> None:
    c = container(manifests)
    (port,) = c["ports"]
    config = manifests["ConfigMap"]["data"]
    image_port = docker_env(dockerfile(), max(i.stage for i in dockerfile()))["PORT"]
    assert port["name"] == "http" and str(port["containerPort"]) == config["PORT"] == image_port
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz", "/metrics"} <= routes
    annotations = manifests["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] in routes
    assert {e["name"]: e["value"] for e in c["env"]}["HOST"] == "0.0.0.0"


def test_resources_security_and_shutdown(manifests: dict[str, dict[str, Any]]) -> None:
    c = container(manifests)
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    user = next(i.args for i in dockerfile() if i.name == "USER").split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] and str(pod["securityContext"]["runAsUser"]) == user
    assert c["securityContext"]["readOnlyRootFilesystem"]
    # a read-only root needs a writable /tmp for the workers' metrics files
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + 30  # + the gateway's graceful shutdown


def test_settings_come_from_the_configmap_and_the_secret(manifests: dict[str, dict[str, Any]]) -> None:
    refs = container(manifests)["envFrom"]
    assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} == {
        manifests["ConfigMap"]["metadata"]["name"]
    }
    assert {r["secretRef"]["name"] for r in refs if "secretRef" in r} == {manifests["Secret"]["metadata"]["name"]}
    known = settings_env()
    assert set(manifests["ConfigMap"]["data"]) <= known
    secret = manifests["Secret"]["stringData"]
    assert set(secret) <= known and {"DASHSCOPE_API_KEY", "OPENAI_API_KEY", "REDIS_URL"} <= set(secret)
    assert secret["DASHSCOPE_API_KEY"] == secret["OPENAI_API_KEY"] == ""  # a template: no real key
    # rate limits on a Redis of their own (noeviction), not the LRU cache's
    assert secret["LIMITS_REDIS_URL"] and secret["LIMITS_REDIS_URL"] != secret["REDIS_URL"]
    assert "data" not in manifests["Secret"]


def test_selectors_and_references_line_up(manifests: dict[str, dict[str, Any]]) -> None:
    deployment = manifests["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = manifests["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "embedding-gateway"}
    assert deployment["metadata"]["name"] == "embedding-gateway"
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    monitor = manifests["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    # the alert rules expect job="embedding-gateway": a ServiceMonitor's job is the Service's name
    assert service["metadata"]["name"] == "embedding-gateway"


def test_readme_covers_managed_redis_and_cluster() -> None:
    text = (Path(K8S) / "README.md").read_text()
    for topic in ("Managed Redis", "Redis Cluster", "allkeys-lru", "rediss://", "noeviction"):
        assert topic in text, topic


def quantity(value: str) -> float:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "m": 0.001, "": 1}
    number = value.rstrip("KMGiem")
    return float(number) * units[value[len(number) :]]


def test_teams_come_from_a_mounted_configmap_file(manifests: dict[str, dict[str, Any]]) -> None:
    """The config file named by EMBEDDING_GATEWAY_CONFIG is teams.yaml of the teams ConfigMap, mounted as a
    folder (a subPath mount never sees an update); it validates, and holds no working key."""
    c = container(manifests)
    path = Path(manifests["ConfigMap"]["data"]["EMBEDDING_GATEWAY_CONFIG"])
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert mount["readOnly"] and "subPath" not in mount
    volume = next(
        v for v in manifests["Deployment"]["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    assert volume["configMap"]["name"] == TEAMS_CONFIGMAP
    config = yaml.safe_load(manifests["TeamsConfigMap"]["data"][path.name])
    settings = Settings.model_validate({"teams": config["teams"]})
    assert settings.teams and all(team.keys == [] for team in settings.teams.values())


def test_fleet_sizing_agrees_with_the_workers(manifests: dict[str, dict[str, Any]]) -> None:
    """CPU limit = WORKERS; memory limit holds every worker's caches; the floor of the processes sharing
    the limits is the fewest pods the HPA runs; a drain takes one pod at a time."""
    config = manifests["ConfigMap"]["data"]
    workers = int(config["WORKERS"])
    limits = container(manifests)["resources"]["limits"]
    assert quantity(limits["cpu"]) == workers
    per_worker = int(config["CACHE_HOT_MAX_BYTES"]) + int(config["CACHE_TEXT_MAX_BYTES"]) + WORKER_BASE_BYTES
    assert quantity(limits["memory"]) >= workers * per_worker + WORKER_BASE_BYTES  # + the supervisor process
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert int(config["REPLICAS"]) == hpa["minReplicas"]
    fields = Settings.model_fields  # each worker's connections to the cache and to the limits' Redis
    connections = fields["redis_max_connections"].default + fields["limits_max_connections"].default
    assert hpa["maxReplicas"] * workers * connections <= 10_000, "over Redis' default maxclients"
    pdb = manifests["PodDisruptionBudget"]["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    assert hpa["minReplicas"] >= 2  # a drain leaves a pod serving
