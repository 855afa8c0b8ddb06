"""What the deploy/ dashboards and alerts ask Prometheus for, and what our processes export."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "jibri-autoscaler.json"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules" / "jibri-autoscaler.rules.yml"

# Grafana's variables, replaced the way Grafana would before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$pool": ".*"}
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def panels(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in document["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(document: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets, annotations, variables."""
    queries = [t["expr"] for p in panels(document) for t in p.get("targets", [])]
    queries += [a["expr"] for a in document["annotations"]["list"] if "expr" in a]
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert match, f"unexpected variable query {variable['definition']!r}"
            queries.append(match.group(1))
    return queries


def expand(query: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        query = query.replace(name, value)
    return query


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expand(query))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name, rest = match.group(0), text[match.end() :].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def exposed_names(exposition: str) -> set[str]:
    """Every sample name in a /metrics text (counters as _total, histograms as _bucket …)."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def known(name: str, exposed: set[str]) -> bool:
    return name in exposed or any(
        name.endswith(s) and name.removesuffix(s) in exposed for s in _SUFFIXES
    )


def recording_rules() -> set[str]:
    import yaml

    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {r["record"] for g in document["groups"] for r in g["rules"] if "record" in r}


def agent_registry(spool_root: Path) -> CollectorRegistry:
    """The agent's full registry as its daemon builds it with uploads on."""
    from agent.metrics import AgentMetrics
    from agent.spool import Spool
    from agent.upload.metrics import UploadMetrics

    metrics = AgentMetrics()
    spool = Spool(spool_root)
    spool.ensure()
    UploadMetrics(metrics.registry, spool, lambda: datetime.now(UTC))
    return metrics.registry
