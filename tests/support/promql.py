"""Helpers of the Prometheus and dashboard tests: read the PromQL of the dashboards and alert rules, the
metric names an expression uses, and a tiny client of Prometheus's HTTP API."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

# What Grafana puts in place of its built-in variables, for a short test run scraped every second.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "10m"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
_GATEWAY_NAME = re.compile(r"\bgateway_[A-Za-z0-9_:]*")


@dataclass(frozen=True)
class Query:
    where: str  # "overview.json: panel 'Requests / s' A" or "alerts.yml: GatewayDown"
    expr: str


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for panel in board.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def variable_query(var: dict[str, Any]) -> str:
    q = var.get("query")
    return str(q.get("query", "")) if isinstance(q, dict) else str(q or "")


def dashboard_queries(name: str, board: dict[str, Any]) -> list[Query]:
    """Every panel target's expression, with the dashboard's variables put in as Grafana would."""
    variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
    out = []
    for panel in panels(board):
        for target in panel.get("targets", []):
            where = f"{name}: panel {panel.get('title')!r} {target.get('refId')}"
            out.append(Query(where, substitute(target["expr"], variables, where)))
    return out


def substitute(expr: str, variables: dict[str, dict[str, Any]], where: str) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in BUILTINS:
            return BUILTINS[name]
        var = variables.get(name)
        if var is None:
            raise AssertionError(f"{where}: ${name} is neither a variable of the dashboard nor a Grafana built-in")
        if not (var.get("includeAll") and var.get("allValue") == ".*"):
            raise AssertionError(f"{where}: variable ${name} must offer All as .* (used in =~ matchers)")
        return ".*"

    return _VARIABLE.sub(one, expr)


def label_values_query(query: str) -> tuple[str, str] | None:
    """label_values(selector, label) -> (selector, label); None for other variable queries."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
    return (m.group(1), m.group(2)) if m else None


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The gateway's metric names an expression selects (string literals, such as label values, aside)."""
    return set(_GATEWAY_NAME.findall(_STRING.sub('""', expr)))


def exported_names(exposition: str) -> set[str]:
    """Every sample name of a /metrics text (counters' _total, histograms' _bucket/_sum/_count, ...)."""
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and line[0] != "#"}


def comparison_sides(expr: str) -> list[str]:
    """The operands of an expression's top-level comparison (`A > 0.05` -> [A, 0.05]); [expr] if none."""
    depth, i, text = 0, 0, _STRING.sub(lambda m: "x" * len(m.group(0)), expr)
    while i < len(text):
        c = text[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and c in "<>=!" and text[i : i + 2] not in ("=~", "!~"):
            size = 2 if text[i + 1 : i + 2] == "=" else 1
            left, right = expr[:i].strip(), expr[i + size :].strip()
            right = right.removeprefix("bool ").strip()
            return [left, right]
        i += 1
    return [expr.strip()]


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        resp = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = resp.json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus refused {expr!r}: {body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr!r} gave {len(result)} series"
        return float(result[0]["value"][1])

    def values(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}

    def has_data(self, expr: str) -> bool:
        """At least one series with a number (not NaN) now."""
        return any(not math.isnan(float(r["value"][1])) for r in self.query(expr))

    def get(self, path: str, **params: str) -> Any:
        resp = httpx.get(self.url + path, params=params, timeout=10)
        resp.raise_for_status()
        return resp.json()["data"]

    def wait(self, check: Any, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus: {what} not within {timeout}s")
            time.sleep(0.25)
