"""deploy/grafana: a well-formed dashboard whose queries name only metrics we export.

tests/e2e/test_prometheus.py checks the same names against a running controller's /metrics
and runs every query through a real Prometheus.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest

from controller.prometheus import Metrics
from controller.spec import parse_desired_state
from tests.support.promql import (
    REPO,
    agent_registry,
    dashboard,
    dashboard_queries,
    exposed_names,
    known,
    metric_names,
    panels,
)

REQUIRED_PANELS = {
    "Instances by state": "jibri_autoscaler_pool_instances",
    "Desired capacity vs bounds and target": "jibri_autoscaler_pool_desired_capacity",
    "Actions by reason": "jibri_autoscaler_actions_total",
    "Decision latency (report received → AWS call)": "jibri_autoscaler_decision_latency_seconds",
    "AWS errors": "jibri_autoscaler_aws_requests_total",
    "Upload backlog": "jibri_agent_spool_recordings",
}


def exported(tmp_path: Path) -> set[str]:
    metrics = Metrics()
    config = (REPO / "config" / "desired-state.yaml").read_text(encoding="utf-8")
    metrics.set_pool(parse_desired_state(config).pools[0])
    metrics.add_aws_operations("autoscaling", ("DescribeAutoScalingGroups",))
    controller = exposed_names(metrics.render().decode())
    agent = exposed_names(generate_latest(agent_registry(tmp_path / "spool")).decode())
    return controller | agent | {"up"}


@pytest.mark.parametrize(
    ("query", "names"),
    [
        pytest.param(
            'sum by (state) (jibri_autoscaler_pool_instances{pool=~"$pool"})',
            {"jibri_autoscaler_pool_instances"},
            id="aggregation",
        ),
        pytest.param(
            'histogram_quantile(0.9, sum by (le) (rate(x_bucket{a="b"}[$__rate_interval])))',
            {"x_bucket"},
            id="histogram",
        ),
        pytest.param(
            'time() - last_success{pool=~"$pool"} > 180', {"last_success"}, id="arithmetic"
        ),
        pytest.param("a / on (pool) group_left b", {"a", "b"}, id="vector-matching"),
    ],
)
def test_metric_name_extraction(query: str, names: set[str]) -> None:
    """The PromQL scan finds the selected metrics and skips functions, labels and keywords."""
    assert metric_names(query) == names


def test_dashboard_covers_what_operators_watch() -> None:
    """Panels for states, capacity, actions, decision latency, AWS errors and upload backlog."""
    document = dashboard()
    by_title = {p["title"]: p for p in panels(document)}
    for title, metric in REQUIRED_PANELS.items():
        assert title in by_title, title
        exprs = " ".join(t["expr"] for t in by_title[title]["targets"])
        assert metric.removesuffix("_total") in exprs, title


def test_dashboard_is_well_formed() -> None:
    """Unique panel ids, no overlapping panels, every query on the selectable data source."""
    document = dashboard()
    assert document["uid"] and document["title"]
    every = list(panels(document))
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip()
    variables = {v["name"] for v in document["templating"]["list"]}
    assert {"datasource", "pool"} <= variables


def test_every_query_names_only_exported_metrics(tmp_path: Path) -> None:
    """Each metric a dashboard query selects is exported by the controller or the agent."""
    exposed = exported(tmp_path)
    unknown = {
        name
        for query in dashboard_queries(dashboard())
        for name in metric_names(query)
        if not known(name, exposed)
    }
    assert unknown == set()


def test_a_misspelt_metric_would_be_caught(tmp_path: Path) -> None:
    """The check is not vacuous: a name the code does not export is reported."""
    exposed = exported(tmp_path)
    assert not known("jibri_autoscaler_pool_instance", exposed)
    assert not known("jibri_agent_upload_failures_total", exposed)
    assert known("jibri_autoscaler_actions_total", exposed)
