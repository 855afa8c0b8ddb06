"""A real Prometheus on loopback, run with deploy/prometheus's config and rules, scraping a real
controller (against the AWS emulator, with reporting agents) and the agent's metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import start_http_server

from tests.support.aws import Emulator, create_asg
from tests.support.controller import (
    Agent,
    ReportingAgents,
    RunningController,
    http,
    pool_yaml,
    running_controller,
    wait_for,
)
from tests.support.loopback import bound_address
from tests.support.promql import (
    PROMETHEUS_DIR,
    RULES,
    agent_registry,
    dashboard,
    dashboard_queries,
    expand,
    exposed_names,
    known,
    metric_names,
)

pytestmark = pytest.mark.e2e

GROUP = "jibri-recorders"
POOL = "recorders"
AGENT_INSTANCE = "i-0123456789abcdef0"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install prometheus (make test installs it)")
    return path


@dataclass
class Setup:
    controller: RunningController
    prometheus: str
    agent_metrics: str
    config: Path
    expected: dict[str, int]

    def query(self, expression: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        status, body = http("GET", url)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (expression, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


def render_config(directory: Path, controller: str, agent: str) -> Path:
    """deploy/prometheus/prometheus.yml with loopback targets instead of DNS and EC2 discovery
    (which would leave this machine), and second-scale intervals."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    controller_job = jobs["jibri-autoscaler"]
    del controller_job["dns_sd_configs"]
    controller_job["static_configs"] = [{"targets": [controller]}]
    agent_job = jobs["jibri-agent"]
    del agent_job["ec2_sd_configs"], agent_job["relabel_configs"]
    agent_job["static_configs"] = [
        {"targets": [agent], "labels": {"pool": POOL, "instance_id": AGENT_INSTANCE}}
    ]
    (directory / "rules").mkdir()
    shutil.copy(RULES, directory / "rules" / RULES.name)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def setup(emulator_server: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    prometheus = binary("prometheus")
    emulator_server.reset()
    home = tmp_path_factory.mktemp("prometheus")
    ids = create_asg(emulator_server, GROUP, min_size=0, max_size=10, desired=3)
    config = home / "pools.yaml"
    config.write_text(pool_yaml(group=GROUP, target_free=2, stale_after="60s", idle_for="1h"))
    server, thread = start_http_server(0, "127.0.0.1", registry=agent_registry(home / "spool"))
    agent_target = f"127.0.0.1:{server.server_port}"
    process = None
    try:
        with running_controller(emulator_server, config) as controller:
            busy, *idle = ids
            agents = [Agent(controller, busy, busy="BUSY")] + [Agent(controller, i) for i in idle]
            with ReportingAgents(agents, interval=1.0):
                rendered = render_config(home, controller.url.removeprefix("http://"), agent_target)
                log = (home / "prometheus.log").open("wb")
                process = subprocess.Popen(
                    [
                        prometheus,
                        f"--config.file={rendered}",
                        f"--storage.tsdb.path={home / 'data'}",
                        "--web.listen-address=127.0.0.1:0",
                        "--log.level=info",  # the "Listening on" line names the port
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                # Prometheus binds port 0 and logs the address it took.
                address = bound_address(
                    process, home / "prometheus.log", r'msg="Listening on" address=(\S+)'
                )
                url = f"http://{address}"

                def ready() -> bool:
                    if process is not None and process.poll() is not None:
                        raise AssertionError((home / "prometheus.log").read_text())
                    try:
                        return http("GET", f"{url}/-/ready")[0] == 200
                    except OSError:
                        return False

                wait_for(ready, within=60, what="Prometheus to be ready")
                expected = {"busy": 1, "idle": 2}
                yield Setup(controller, url, f"http://{agent_target}", rendered, expected)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        server.shutdown()
        thread.join(timeout=10)


def test_prometheus_reads_pool_instances_by_state(setup: Setup) -> None:
    """Prometheus's query API returns jibri_autoscaler_pool_instances with the controller's
    counts: one busy and two idle recorders, every other state at zero."""

    def counts() -> dict[str, float] | None:
        rows = setup.query(f'jibri_autoscaler_pool_instances{{pool="{POOL}"}}')
        found = {row["metric"]["state"]: float(row["value"][1]) for row in rows}
        wanted = {state: float(n) for state, n in setup.expected.items()}
        others = {state: value for state, value in found.items() if state not in wanted}
        matches = all(found.get(state) == n for state, n in wanted.items())
        return found if matches and others and not any(others.values()) else None

    found = wait_for(counts, within=60, what="the scraped pool instances")
    assert {row["metric"]["job"] for row in setup.query("jibri_autoscaler_pool_instances")} == {
        "jibri-autoscaler"
    }
    assert {"starting", "unknown", "stale", "draining"} <= set(found)


def test_both_targets_are_up(setup: Setup) -> None:
    """The controller and agent jobs are scraped successfully."""

    def up() -> dict[str, float] | None:
        rows = setup.query("up")
        values = {row["metric"]["job"]: float(row["value"][1]) for row in rows}
        return values if values == {"jibri-autoscaler": 1.0, "jibri-agent": 1.0} else None

    wait_for(up, within=60, what="both targets up")


def test_rules_load_and_evaluate_cleanly(setup: Setup) -> None:
    """Every rule of deploy/prometheus is loaded and evaluates without error on real data;
    none of the pool alerts fires for a healthy pool."""

    def evaluated() -> list[dict[str, Any]] | None:
        status, body = http("GET", f"{setup.prometheus}/api/v1/rules")
        groups = json.loads(body)["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = rules and all(rule.get("lastEvaluation", "").startswith("2") for rule in rules)
        return rules if status == 200 and done else None

    rules = wait_for(evaluated, within=60, what="every rule evaluated")
    source = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert len(rules) == sum(len(g["rules"]) for g in source["groups"])
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    free = wait_for(
        lambda: setup.query("pool:jibri_autoscaler_free_instances"), what="the recording rule"
    )
    assert [(row["metric"]["pool"], float(row["value"][1])) for row in free] == [(POOL, 2.0)]
    # Before the first scrape `absent(up)` holds, so JibriAutoscalerDown may be pending for an
    # evaluation or two (its `for: 2m` keeps it from firing); it must clear once scraped.
    watched = {"JibriAutoscalerDown", "JibriPoolNoFreeRecorders", "JibriAgentStale"}

    def quiet() -> bool:
        rules = evaluated() or []
        active = {r["name"] for r in rules if r.get("state") in ("pending", "firing")}
        return bool(rules) and not active & watched

    wait_for(quiet, within=60, what="no pool alert pending")


def test_promtool_accepts_the_rendered_config(setup: Setup) -> None:
    """`promtool check config` accepts the config exactly as Prometheus runs it."""
    result = subprocess.run(
        [binary("promtool"), "check", "config", str(setup.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("source", ["controller", "agent"])
def test_promtool_accepts_the_exported_metrics(setup: Setup, source: str) -> None:
    """`promtool check metrics` finds nothing to complain about in what we export."""
    url = setup.controller.url if source == "controller" else setup.agent_metrics
    status, body = http("GET", f"{url}/metrics")
    assert status == 200 and body
    result = subprocess.run(
        [binary("promtool"), "check", "metrics"],
        input=body.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_name_scraped_metrics_and_run(setup: Setup) -> None:
    """Every Grafana query names only metrics the running controller or the agent exports, and
    runs through Prometheus without error; the controller's return data."""
    status, body = http("GET", f"{setup.controller.url}/metrics")
    assert status == 200
    controller_names = exposed_names(body.decode())
    agent_names = exposed_names(http("GET", f"{setup.agent_metrics}/metrics")[1].decode())
    exposed = controller_names | agent_names | {"up"}
    queries = dashboard_queries(dashboard())
    unknown = {n for q in queries for n in metric_names(q) if not known(n, exposed)}
    assert unknown == set()
    wait_for(lambda: setup.query("jibri_autoscaler_pool_desired_capacity"), what="a scrape")
    for query in queries:
        setup.query(expand(query))
    for gauge in ("jibri_autoscaler_pool_desired_capacity", "jibri_autoscaler_pool_target_free"):
        assert setup.query(f'{gauge}{{pool="{POOL}"}}'), gauge
