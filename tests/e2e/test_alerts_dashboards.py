"""The alert rules and Grafana dashboards, checked without a running Prometheus: promtool's checks and
unit tests of the rules, and every expression against the metrics app/metrics.py defines. (The same
expressions run against a real Prometheus in test_prometheus.py.)"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from prometheus_client import CollectorRegistry

from app.jobs.metrics import JobMetrics
from app.metrics import Metrics
from tests.support.promql import (
    ALERTS,
    DASHBOARDS,
    ROOT,
    alert_rules,
    comparison_sides,
    dashboard_queries,
    dashboards,
    metric_names,
    panels,
)

PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run scripts/test.sh, which installs the Debian package prometheus")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=ALERTS.parent)


def defined_names() -> set[str]:
    """Every sample name the gateway's metrics can produce."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    registry = Metrics(CollectorRegistry()).registry
    JobMetrics(registry)  # the batch jobs' metrics (app/jobs/metrics.py), in the same registry
    families = registry.collect()
    return {f.name + s for f in families for s in suffixes[f.type]}


def test_promtool_accepts_the_config_and_the_rules() -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_on_bad_series_and_not_on_good_ones() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load((ALERTS.parent / "alerts.test.yml").read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    assert tested == {rule["alert"] for rule in alert_rules()}  # every alert has a unit test


def test_the_issue_s_alerts_are_all_there_with_what_a_pager_needs() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert {
        "GatewayHighErrorRate",
        "GatewayHighLatencyP99",
        "GatewayUpstreamThrottling",
        "GatewayRedisDown",
        "GatewayCacheHitRatioDrop",
    } <= set(rules)
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert rule.get("for"), name
        assert metric_names(rule["expr"]) <= defined_names(), name


def test_dashboards_query_only_metrics_the_gateway_defines() -> None:
    names = defined_names()
    used: set[str] = set()
    for name, board in dashboards().items():
        for query in dashboard_queries(name, board):
            missing = metric_names(query.expr) - names
            assert not missing, f"{query.where} queries {sorted(missing)}, which app/metrics.py does not define"
            used |= metric_names(query.expr)
    # every metric is on some dashboard (histograms through their buckets)
    assert {n.removesuffix("_bucket") for n in names if not n.endswith(("_sum", "_count"))} <= {
        n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for n in used
    }


def test_dashboards_are_well_formed() -> None:
    boards = dashboards()
    assert len({b["uid"] for b in boards.values()}) == len(boards) == 4
    for name, board in boards.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        cells: set[tuple[int, int]] = set()
        for panel in panels(board):
            where = f"{name}: {panel['title']}"
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert panel["targets"] and panel.get("description") is not None, where
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, where
            mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
            assert not cells & mine, f"{where} overlaps another panel"
            cells |= mine
        assert len({p["id"] for p in panels(board)}) == len(panels(board)), name


def test_grafana_provisioning_points_at_the_dashboards_and_prometheus() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [(d["type"], d["isDefault"]) for d in datasources] == [("prometheus", True)]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "embedding-gateway.yml").read_text())["providers"]
    assert len(providers) == 1 and providers[0]["type"] == "file"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == providers[0]["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert DASHBOARDS == ROOT / "deploy" / "grafana" / "dashboards"
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(providers[0]["options"]["path"] + "/")
    assert (DASHBOARDS / home.rsplit("/", 1)[1]).is_file()
    prometheus = compose["services"]["prometheus"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    assert any(p.endswith(":9090") for p in prometheus["ports"])


@pytest.mark.parametrize(
    ("expr", "sides"),
    [
        ('up{job="g"} == 0', ['up{job="g"}', "0"]),
        ('sum(rate(a{s="5xx"}[5m])) / sum(b)\n  > 0.05', ['sum(rate(a{s="5xx"}[5m])) / sum(b)', "0.05"]),
        ('(x{a!="b", c=~"d>e"}) < 0.5 * (y)', ['(x{a!="b", c=~"d>e"})', "0.5 * (y)"]),
        ("a >= bool 1", ["a", "1"]),
        ("sum(a)", ["sum(a)"]),
    ],
)
def test_comparison_sides(expr: str, sides: list[str]) -> None:
    assert comparison_sides(expr) == sides
