"""The HTTP side: POST /v1/reports (docs/design.md §7), /metrics, /healthz and /status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer

from common.wire import MAX_REPORT_BYTES
from controller.actuator import Actuator
from controller.aws import AUTOSCALING_OPERATIONS, AioAutoScaling, AutoScaling
from controller.http.server import ServerContext, make_app
from controller.loop import PoolRunner
from controller.pools import Controller
from controller.prometheus import Metrics
from controller.spec import parse_desired_state
from controller.store import ReportStore
from tests.support.fake_autoscaling import FakeAutoScaling, ManualClock
from tests.support.report_auth import SharedTokenAuth

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
UNKNOWN_ID = "i-0fffffffffffffff0"

POOL = """\
apiVersion: jibri-autoscaler/v1
kind: JibriPool
metadata: {name: recorders}
spec:
  autoScalingGroupName: jibri
  capacity: {min: 0, max: 10}
  targetFree: 1
  instances: {staleAfter: 30s}
  resync: 10s
"""


@dataclass
class Harness:
    client: TestClient[Any, Any]
    controller: Controller
    runner: PoolRunner
    fake: FakeAutoScaling
    clock: ManualClock
    ids: list[str]

    @property
    def metrics(self) -> Metrics:
        return self.controller.metrics

    def count(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(f"jibri_autoscaler_{name}", labels)
        return 0.0 if value is None else value


def body(instance_id: str, seq: int = 1, busy: str = "IDLE", **extra: Any) -> dict[str, Any]:
    return {
        "instanceId": instance_id,
        "bootId": "3b0c2f9e-boot",
        "seq": seq,
        "jibri": {"busyStatus": busy, "healthStatus": "HEALTHY"},
        **extra,
    }


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    fake = FakeAutoScaling()
    ids = fake.add_group("jibri", min_size=0, max_size=10, desired=2)
    clock = ManualClock()
    metrics = Metrics()
    # What AwsClients does at start for the real client.
    metrics.add_aws_operations(AioAutoScaling.SERVICE, AUTOSCALING_OPERATIONS)

    async def autoscaling(region: str | None) -> AutoScaling:
        return fake

    controller = Controller(
        state=parse_desired_state(POOL, "pools.yaml"),
        store=ReportStore(),
        metrics=metrics,
        autoscaling=autoscaling,
        actuator=Actuator(metrics=metrics, clock=clock, dry_run=False),
        clock=clock.as_clock(),
    )
    # One pass without a running task, so the ASG's instances are known to the pool.
    runner = PoolRunner(controller.state.pools[0], controller, started_at=clock())
    controller.pools[runner.name] = runner
    metrics.set_pool(runner.pool)
    await runner.step()
    app = make_app(
        ServerContext(
            controller=controller, metrics=metrics, auth=SharedTokenAuth(TOKEN), clock=clock
        )
    )
    async with TestClient(TestServer(app)) as client:
        yield Harness(client, controller, runner, fake, clock, ids)


async def post(h: Harness, payload: object, headers: dict[str, str] | None = None) -> Any:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await h.client.post(
        "/v1/reports", data=data, headers=AUTH if headers is None else headers
    )


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Bearer wrong"}, id="wrong-token"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, id="wrong-scheme"),
        pytest.param({"Authorization": f"Bearer {TOKEN}x"}, id="longer"),
    ],
)
async def test_bad_token_is_401(h: Harness, headers: dict[str, str]) -> None:
    """A missing or wrong bearer token is refused with 401 and the report is not stored."""
    response = await post(h, body(h.ids[0]), headers)
    assert response.status == 401
    assert h.controller.store.get(h.ids[0]) is None
    assert h.count("agent_reports_total", outcome="unauthorized") == 1


async def test_too_large_body_is_413(h: Harness) -> None:
    """A body over 16 KiB is refused with 413, with or without a Content-Length."""
    padded = json.dumps(body(h.ids[0], pad="x" * MAX_REPORT_BYTES)).encode()
    response = await post(h, padded)
    assert response.status == 413

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(padded), 1024):
            yield padded[start : start + 1024]

    chunked = await h.client.post("/v1/reports", data=chunks(), headers=AUTH)
    assert chunked.status == 413
    assert h.count("agent_reports_total", outcome="too-large") == 2


async def test_body_at_the_limit_is_read_whole(h: Harness) -> None:
    """A body just under the limit, sent in small chunks, is read completely (not cut)."""
    document = body(h.ids[0])
    text = json.dumps(document)
    padded = (text[:-1] + " " * (MAX_REPORT_BYTES - len(text)) + "}").encode()
    assert len(padded) == MAX_REPORT_BYTES

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(padded), 700):
            yield padded[start : start + 700]

    response = await h.client.post("/v1/reports", data=chunks(), headers=AUTH)
    assert response.status == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param(b"{not json", None, id="not-json"),
        pytest.param(b"\xff\xfe", None, id="not-utf8"),
        pytest.param({**body(UNKNOWN_ID), "seq": -1}, "seq", id="negative-seq"),
        pytest.param(
            {**body(UNKNOWN_ID), "jibri": {"busyStatus": "NAPPING", "healthStatus": "HEALTHY"}},
            "jibri.busyStatus",
            id="bad-enum",
        ),
        pytest.param({**body(UNKNOWN_ID), "instanceId": "vm-1"}, "instanceId", id="bad-id"),
        pytest.param({**body(UNKNOWN_ID), "colour": "red"}, "colour", id="unknown-field"),
        pytest.param([1, 2], "(body)", id="not-an-object"),
        pytest.param({**body(UNKNOWN_ID), "seq": "5"}, "seq", id="seq-as-string"),
        pytest.param({**body(UNKNOWN_ID), "seq": 5.0}, "seq", id="seq-as-float"),
        pytest.param({**body(UNKNOWN_ID), "draining": "yes"}, "draining", id="bool-as-string"),
        pytest.param({**body(UNKNOWN_ID), "drained": 1}, "drained", id="bool-as-number"),
    ],
)
async def test_invalid_report_is_400_naming_the_field(
    h: Harness, payload: object, field: str | None
) -> None:
    """Bad JSON or a schema violation is refused with 400 and a JSON reason naming the field."""
    response = await post(h, payload)
    assert response.status == 400
    answer = await response.json()
    assert answer["error"]
    if field is not None:
        assert answer["field"] == field
    assert h.count("agent_reports_total", outcome="invalid") == 1


def _nested_jibri(depth: int) -> bytes:
    text = json.dumps(body(UNKNOWN_ID, jibri="@"))
    return text.replace('"@"', "[" * depth + "]" * depth).encode()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"[" * 8000 + b"]" * 8000, id="8000-arrays"),
        pytest.param(b'{"a":' * 2000 + b"1" + b"}" * 2000, id="2000-objects"),
        pytest.param(_nested_jibri(5000), id="jibri-field-5000-deep"),
        pytest.param(b"[" * 9000, id="8000-unclosed"),
    ],
)
async def test_deeply_nested_body_is_400_not_500(h: Harness, payload: bytes) -> None:
    """JSON nested thousands deep within 16 KiB is refused with 400 and a reason."""
    assert len(payload) <= MAX_REPORT_BYTES
    response = await post(h, payload)
    assert response.status == 400
    assert "nests deeper than" in (await response.json())["error"]
    assert h.count("agent_reports_total", outcome="invalid") == 1


async def test_brackets_inside_strings_do_not_count_as_nesting(h: Harness) -> None:
    """A string full of brackets (and escaped quotes) is data, not nesting: the report is
    judged by the schema alone."""
    response = await post(h, body(h.ids[0], bootId='[{"\\[' * 10))
    assert response.status == 200


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("text/plain", id="text"),
        pytest.param("application/x-www-form-urlencoded", id="form"),
        pytest.param("application/octet-stream", id="octet-stream"),
    ],
)
async def test_report_that_is_not_declared_json_is_415(h: Harness, content_type: str) -> None:
    """A report must be sent as application/json; anything else gets 415 naming the type."""
    headers = {**AUTH, "Content-Type": content_type}
    response = await post(h, body(h.ids[0]), headers)
    assert response.status == 415
    assert content_type in (await response.json())["reason"]
    assert h.controller.store.get(h.ids[0]) is None


async def test_json_with_a_charset_is_accepted(h: Harness) -> None:
    """application/json with a charset parameter is still JSON."""
    headers = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
    response = await post(h, body(h.ids[0]), headers)
    assert response.status == 200


async def raw_exchange(server: BaseTestServer, request: bytes) -> tuple[int, bytes]:
    """Send bytes no HTTP client library would, and read the answer to the end."""
    assert server.host is not None and server.port is not None
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request)
        answer = await reader.read()
    finally:
        writer.close()
    head, _, content = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), content


async def test_non_ascii_authorization_is_401(h: Harness) -> None:
    """An Authorization header with a 0xff byte is refused with 401 and a JSON reason."""
    report = json.dumps(body(h.ids[0])).encode()
    request = (
        b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff" + TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(report)).encode() + b"\r\n\r\n" + report
    )
    status, content = await raw_exchange(h.client.server, request)
    assert status == 401
    assert json.loads(content)["error"] == "missing or wrong bearer token"
    assert h.count("agent_reports_total", outcome="unauthorized") == 1


async def test_unknown_instance_is_held_with_202(h: Harness) -> None:
    """An id in no managed ASG gets 202 drain:false and its report is held, not lost."""
    response = await post(h, body(UNKNOWN_ID))
    assert response.status == 202
    assert await response.json() == {"drain": False}
    assert h.controller.store.get(UNKNOWN_ID) is not None
    assert h.controller.store.unmanaged_count == 1
    assert h.count("agent_reports_total", outcome="unmanaged") == 1


async def test_new_unknown_instance_triggers_adoption_once(h: Harness) -> None:
    """The first report of an unknown id triggers the pools (a pass adopts a new instance at
    once); unchanged repeats do not."""
    h.clock.now = 1005.0
    await post(h, body(UNKNOWN_ID, seq=1))
    assert h.runner.triggered_at == 1005.0
    await h.runner.step()
    h.clock.now = 1006.0
    await post(h, body(UNKNOWN_ID, seq=2))
    assert h.runner.triggered_at is None


async def test_managed_report_is_200_and_triggers_on_change_only(h: Harness) -> None:
    """A managed instance's report gets 200; a changed state triggers its pool with the
    receive time, an unchanged one does not."""
    h.clock.now = 1010.0
    response = await post(h, body(h.ids[0], seq=1, busy="BUSY"))
    assert response.status == 200 and await response.json() == {"drain": False}
    assert h.runner.triggered_at == 1010.0

    await h.runner.step()
    assert h.runner.triggered_at is None
    h.clock.now = 1011.0
    await post(h, body(h.ids[0], seq=2, busy="BUSY"))
    assert h.runner.triggered_at is None
    assert h.count("agent_reports_total", outcome="accepted") == 2


async def test_triggered_pass_measures_decision_latency(h: Harness) -> None:
    """The pass a report triggers records the time from receipt to the first AWS call."""
    h.clock.now = 2000.0
    for seq, instance_id in enumerate(h.ids, start=1):
        await post(h, body(instance_id, seq=seq, busy="BUSY"))
    h.clock.now = 2000.125
    await h.runner.step()
    assert h.fake.groups["jibri"].desired == 3
    assert h.count("decision_latency_seconds_count", pool="recorders") == 1
    assert h.count("decision_latency_seconds_sum", pool="recorders") == pytest.approx(0.125)


async def test_drain_answer_follows_drain_request(h: Harness) -> None:
    """drain is true once the controller asked the instance to drain."""
    h.runner.actuation.drain_requested_now(h.ids[0], h.clock())
    response = await post(h, body(h.ids[0]))
    assert await response.json() == {"drain": True}
    other = await post(h, body(h.ids[1]))
    assert await other.json() == {"drain": False}


async def test_drain_answer_keeps_agent_draining_after_controller_restart(h: Harness) -> None:
    """An agent that reports draining keeps getting drain:true though this controller never
    asked (it restarted)."""
    response = await post(h, body(h.ids[0], draining=True))
    assert await response.json() == {"drain": True}


async def test_out_of_order_report_is_ignored_but_answered(h: Harness) -> None:
    """An older seq changes nothing, but still gets 200 with the current drain answer."""
    await post(h, body(h.ids[0], seq=5, busy="BUSY"))
    h.runner.actuation.drain_requested_now(h.ids[0], h.clock())
    response = await post(h, body(h.ids[0], seq=4))
    assert response.status == 200 and await response.json() == {"drain": True}
    held = h.controller.store.get(h.ids[0])
    assert held is not None and held.busy.value == "BUSY"
    assert h.count("agent_reports_total", outcome="out-of-order") == 1


async def test_metrics_expose_every_series_from_the_start(h: Harness) -> None:
    """/metrics serves every metric of docs/design.md §9, with zero-valued label sets
    initialised."""
    response = await h.client.get("/metrics")
    text = await response.text()
    assert response.status == 200 and response.content_type == "text/plain"
    for name in (
        "pool_instances",
        "pool_desired_capacity",
        "pool_capacity_min",
        "pool_capacity_max",
        "pool_target_free",
        "actions_total",
        "reconcile_duration_seconds_bucket",
        "reconcile_errors_total",
        "last_reconcile_success_timestamp_seconds",
        "decision_latency_seconds_bucket",
        "aws_requests_total",
        "aws_request_duration_seconds_bucket",
        "agent_reports_total",
        "config_reloads_total",
    ):
        assert f"jibri_autoscaler_{name}" in text, name
    for line in (
        'jibri_autoscaler_pool_instances{pool="recorders",state="draining"} 0.0',
        'jibri_autoscaler_actions_total{action="drain",pool="recorders",reason="idle-excess"} 0.0',
        'jibri_autoscaler_reconcile_errors_total{kind="throttled",pool="recorders"} 0.0',
        'jibri_autoscaler_agent_reports_total{outcome="too-large"} 0.0',
        'jibri_autoscaler_config_reloads_total{outcome="invalid"} 0.0',
        'jibri_autoscaler_pool_capacity_max{pool="recorders"} 10.0',
    ):
        assert line in text, line


async def test_healthz_fails_when_a_pool_has_not_reconciled_recently(h: Harness) -> None:
    """/healthz is 200 after a recent pass and 503 naming the pool after three resync periods."""
    ok = await h.client.get("/healthz")
    assert ok.status == 200 and (await ok.json())["ok"] is True
    h.fake.fail("DescribeAutoScalingGroups", "throttled")
    h.clock.advance(31.0)
    await h.runner.step()
    failing = await h.client.get("/healthz")
    document = await failing.json()
    assert failing.status == 503
    assert document["pools"]["recorders"]["ok"] is False
    assert "injected throttled failure" in document["pools"]["recorders"]["message"]


async def test_status_shows_spec_counts_instances_and_conditions(h: Harness) -> None:
    """/status gives per pool the spec, ASG capacity, counts by state, each instance, and
    conditions including the last reconcile error."""
    await post(h, body(h.ids[0], busy="BUSY"))
    await post(h, body(h.ids[1], busy="BUSY"))
    await h.runner.step()
    h.fake.fail("DescribeAutoScalingGroups", "not-found")
    await h.runner.step()
    h.clock.advance(2.0)
    response = await h.client.get("/status")
    document = await response.json()
    (pool,) = document["pools"]
    assert pool["name"] == "recorders" and pool["spec"]["targetFree"] == 1
    assert pool["autoScalingGroup"] == {"name": "jibri", "desired": 2, "min": 0, "max": 10}
    assert pool["plannedCapacity"] == 3
    assert pool["counts"]["busy"] == 2
    busy = next(i for i in pool["instances"] if i["instanceId"] == h.ids[0])
    assert busy["state"] == "busy" and busy["protected"] is True
    assert busy["lastReportAgeSeconds"] == pytest.approx(2.0)
    conditions = {c["type"]: c for c in pool["conditions"]}
    assert conditions["Reconciled"]["status"] == "False"
    assert conditions["Reconciled"]["reason"] == "ReconcileFailing"
    assert "injected not-found failure" in conditions["Reconciled"]["message"]
    assert {"TargetFreeMet", "Degraded"} <= set(conditions)
