"""deploy/prometheus: the config and rules pass promtool, the alerts fire when they should, and
they name only metrics we export. A real Prometheus runs them in tests/e2e/test_prometheus.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from controller.prometheus import Metrics
from controller.spec import parse_desired_state
from tests.support.cfn import load_template
from tests.support.promql import (
    PROMETHEUS_DIR,
    REPO,
    RULES,
    agent_registry,
    exposed_names,
    known,
    metric_names,
    recording_rules,
)

RULE_TESTS = RULES.with_name("jibri-autoscaler.test.yml")
CONFIG = PROMETHEUS_DIR / "prometheus.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (make test installs it)")
    return path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def test_config_passes_promtool() -> None:
    """`promtool check config` accepts the shipped scrape config and finds its rule file."""
    result = run("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_rules_pass_promtool() -> None:
    """`promtool check rules` accepts the alert rules."""
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_when_they_should() -> None:
    """`promtool test rules`: each alert fires for its condition after its `for`, not before."""
    result = run("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    """Every alert of the rule file is exercised by the rule tests."""
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])}
    assert alerts - tested == set()
    assert {
        "JibriAutoscalerDown",
        "JibriPoolNoFreeRecorders",
        "JibriAutoscalerReconcileFailing",
        "JibriAgentStale",
        "JibriUploadsFailing",
    } <= alerts


def test_rules_name_only_exported_metrics(tmp_path: Path) -> None:
    """Each metric an alert or recording rule selects is exported by the controller or agent."""
    metrics = Metrics()
    config = (REPO / "config" / "desired-state.yaml").read_text(encoding="utf-8")
    metrics.set_pool(parse_desired_state(config).pools[0])
    metrics.add_aws_operations("autoscaling", ("DescribeAutoScalingGroups",))
    exposed = exposed_names(metrics.render().decode())
    exposed |= exposed_names(generate_latest(agent_registry(tmp_path / "spool")).decode())
    exposed |= {"up"} | recording_rules()
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    unknown = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in metric_names(rule["expr"])
        if not known(name, exposed)
    }
    assert unknown == set()


def test_scrape_ports_match_the_stack() -> None:
    """Prometheus scrapes the controller and agents on the ports the stack opens to it."""
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    parameters = load_template()["Parameters"]
    (dns,) = jobs["jibri-autoscaler"]["dns_sd_configs"]
    assert dns["port"] == parameters["ControllerPort"]["Default"]
    assert dns["names"] == [f"controller.{parameters['ServiceDiscoveryNamespace']['Default']}"]
    (ec2,) = jobs["jibri-agent"]["ec2_sd_configs"]
    assert ec2["port"] == parameters["AgentMetricsPort"]["Default"]
    filters = {f["name"]: f["values"] for f in ec2["filters"]}
    assert filters["tag-key"] == ["jibri-autoscaler:pool"]
    relabels = {
        r["target_label"]: r["source_labels"] for r in jobs["jibri-agent"]["relabel_configs"]
    }
    assert relabels["pool"] == ["__meta_ec2_tag_jibri_autoscaler_pool"]
