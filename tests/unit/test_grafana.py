"""Grafana's provisioning files and dashboards against what the Grafana version docker-compose.yml names
(11.2) accepts, as far as it can be checked without Grafana: no Grafana binary or image can be had on the
test machines (not in Debian; npm's @grafana/schema holds TypeScript types, not a validator). The fields
below are those of Grafana's provisioning reference; every panel's query runs on a real Prometheus in
test_prometheus.py."""

from __future__ import annotations

from typing import Any

import yaml

from tests.support.promql import ROOT, dashboards, panels

PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DATASOURCE_FIELDS = {
    "name", "type", "access", "orgId", "uid", "url", "user", "database", "basicAuth", "basicAuthUser",
    "withCredentials", "isDefault", "jsonData", "secureJsonData", "version", "editable",
}  # fmt: skip
PROVIDER_FIELDS = {
    "name", "orgId", "folder", "folderUid", "type", "disableDeletion", "updateIntervalSeconds", "allowUiUpdates",
    "options",
}  # fmt: skip
PROMETHEUS_JSON_DATA = {"timeInterval", "httpMethod", "queryTimeout", "manageAlerts", "prometheusType"}
# Panel plugins built into Grafana 11 (no plugin to install)
CORE_PANELS = {
    "timeseries", "stat", "table", "gauge", "bargauge", "text", "row", "heatmap", "piechart", "barchart",
    "histogram", "state-timeline", "status-history", "logs", "dashlist", "alertlist", "news", "nodeGraph",
    "trend", "xychart", "canvas", "geomap",
}  # fmt: skip
SCHEMA_VERSION_MAX = 39  # the dashboard schema of Grafana 11.0 to 11.2: a newer one is migrated down badly


def compose_grafana_version() -> str:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image: str = compose["services"]["grafana"]["image"]
    return image.rsplit(":", 1)[1]


def test_the_provisioning_files_use_only_grafana_s_fields() -> None:
    assert compose_grafana_version().startswith("11.2.")
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert set(sources) <= {"apiVersion", "datasources", "deleteDatasources", "prune"} and sources["apiVersion"] == 1
    for source in sources["datasources"]:
        assert set(source) <= DATASOURCE_FIELDS, set(source) - DATASOURCE_FIELDS
        assert source["access"] in ("proxy", "direct") and set(source.get("jsonData", {})) <= PROMETHEUS_JSON_DATA
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "embedding-gateway.yml").read_text())
    assert set(providers) == {"apiVersion", "providers"} and providers["apiVersion"] == 1
    for provider in providers["providers"]:
        assert set(provider) <= PROVIDER_FIELDS, set(provider) - PROVIDER_FIELDS
        assert set(provider["options"]) <= {"path", "foldersFromFilesStructure"}


def test_every_panel_resolves_to_the_provisioned_datasource() -> None:
    """Each panel and query names the dashboard's `datasource` variable, whose type is the provisioned
    (default) datasource's type; panel types are built in; queries have unique refIds and an expression."""
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    (default,) = [s for s in sources if s["isDefault"]]
    for name, board in dashboards().items():
        assert board["schemaVersion"] <= SCHEMA_VERSION_MAX, name
        variables: dict[str, Any] = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["query"] == default["type"]
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"] == {"type": default["type"], "uid": "${datasource}"}, variable["name"]
        for panel in panels(board):
            where = f"{name}: {panel['title']}"
            assert panel["type"] in CORE_PANELS, where
            refs = [t["refId"] for t in panel["targets"]]
            assert len(set(refs)) == len(refs), where
            for target in panel["targets"]:
                assert target.get("datasource", panel["datasource"]) == panel["datasource"], where
                assert target["expr"].strip(), where
