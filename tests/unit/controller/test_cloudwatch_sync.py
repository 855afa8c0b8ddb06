"""The CloudWatch step against in-memory APIs: publishing, alarm upkeep, fallback, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import yaml

from controller.cloudwatch.api import CloudWatchApi, ScalingPolicyApi
from controller.cloudwatch.step import CloudWatchSync
from controller.http.status import render
from controller.model import AsgView, InstanceState, InstanceView, Observed, Plan
from controller.prometheus import Metrics
from controller.spec import JibriPool, parse_desired_state
from tests.support.fake_cloudwatch import FakeCloudWatch, FakePolicies

PREFIX = "jibri-autoscaler/recorders/"
FEW_FREE = {
    "name": "few-free",
    "metricName": "FreeInstances",
    "statistic": "Minimum",
    "threshold": 1,
    "comparisonOperator": "LessThanThreshold",
}


def _pool(alarms: Sequence[dict[str, Any]] = (), **cloud_watch: Any) -> JibriPool:
    document = {
        "apiVersion": "jibri-autoscaler/v1",
        "kind": "JibriPool",
        "metadata": {"name": "recorders"},
        "spec": {
            "autoScalingGroupName": "jibri-recorders",
            "capacity": {"min": 1, "max": 10},
            "targetFree": 2,
            "resync": "15s",
            "cloudWatch": {"alarms": list(alarms), **cloud_watch},
        },
    }
    return parse_desired_state(yaml.safe_dump(document)).pools[0]


OBSERVED = Observed(
    asg=AsgView("jibri-recorders", 1, 10, 0, ()),
    reports={},
    first_seen={},
    drain_requested={},
    controller_started_at=0.0,
)


def _plan(**counts: int) -> Plan:
    views = []
    for state, count in counts.items():
        for n in range(count):
            views.append(InstanceView(f"i-{state}-{n}", InstanceState(state), False, 1.0))
    return Plan(actions=(), requeue_after=15.0, instances=tuple(views), desired_capacity=0)


class Rig:
    def __init__(self, *, dry_run: bool = False) -> None:
        self.cloudwatch = FakeCloudWatch()
        self.policies = FakePolicies()
        self.now = 100.0
        self.metrics = Metrics()
        self.sync = CloudWatchSync(
            apis=self.apis,
            metrics=self.metrics,
            dry_run=dry_run,
            clock=lambda: self.now,
            wall_clock=lambda: 1_700_000_000.0 + self.now,
            min_interval=0.0,
        )

    async def apis(self, region: str | None) -> tuple[CloudWatchApi, ScalingPolicyApi]:
        return self.cloudwatch, self.policies

    async def round(self, pool: JibriPool, plan: Plan | None = None) -> None:
        await self.sync.run_once(pool, plan or _plan(idle=2))

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


async def test_publishes_the_four_gauges_in_one_request() -> None:
    """One pass publishes Free, Busy, Starting and Draining in a single PutMetricData."""
    rig = Rig()
    await rig.round(_pool(), _plan(idle=2, starting=1, busy=3, stale=1, draining=1))
    assert len(rig.cloudwatch.published) == 1
    namespace, data = rig.cloudwatch.published[0]
    assert namespace == "Jibri"
    assert {d.metric_name: d.value for d in data} == {
        "FreeInstances": 3.0,
        "BusyInstances": 4.0,
        "StartingInstances": 1.0,
        "DrainingInstances": 1.0,
    }
    assert {d.dimensions for d in data} == {(("AutoScalingGroupName", "jibri-recorders"),)}


async def test_publish_follows_the_spec() -> None:
    """publishMetrics: false publishes nothing; storageResolution and namespace are honoured."""
    rig = Rig()
    await rig.round(_pool(publishMetrics=False))
    assert rig.cloudwatch.published == []
    await rig.round(_pool(namespace="Recorders", storageResolution=1))
    namespace, data = rig.cloudwatch.published[0]
    assert namespace == "Recorders"
    assert {d.storage_resolution for d in data} == {1}


async def test_publish_failure_is_counted_shown_and_retried() -> None:
    """A failed PutMetricData is counted, shown in status, does not stop alarms, and is retried."""
    rig = Rig()
    rig.cloudwatch.failing["PutMetricData"] = "throttled"
    await rig.round(_pool([FEW_FREE]))
    assert (
        rig.sample("jibri_autoscaler_cloudwatch_errors_total", pool="recorders", step="metrics")
        == 1.0
    )
    assert (
        rig.sample("jibri_autoscaler_reconcile_errors_total", pool="recorders", kind="throttled")
        == 1.0
    )
    assert PREFIX + "few-free" in rig.cloudwatch.alarms
    status = rig.sync.pool_status("recorders")
    assert status is not None and "metrics" in status["errors"]
    del rig.cloudwatch.failing["PutMetricData"]
    await rig.round(_pool([FEW_FREE]))
    assert len(rig.cloudwatch.published) == 1
    status = rig.sync.pool_status("recorders")
    assert status is not None and status["errors"] == {}


async def test_declared_alarm_is_created_with_tags_and_drift_is_corrected() -> None:
    """A declared alarm is created tagged; a hand edit is reverted on the next sync."""
    rig = Rig()
    pool = _pool([FEW_FREE])
    await rig.round(pool)
    alarm = rig.cloudwatch.alarms[PREFIX + "few-free"]
    assert (alarm["Threshold"], alarm["Statistic"], alarm["Namespace"]) == (1.0, "Minimum", "Jibri")
    assert rig.cloudwatch.tags[alarm["AlarmArn"]] == {
        "jibri-autoscaler:pool": "recorders",
        "jibri-autoscaler:asg": "jibri-recorders",
    }
    alarm["Threshold"] = 7.0
    rig.now += 15
    await rig.round(pool)
    assert rig.cloudwatch.alarms[PREFIX + "few-free"]["Threshold"] == 1.0
    status = rig.sync.pool_status("recorders")
    assert status is not None
    assert status["alarms"][0]["corrected"] == ["threshold"]
    assert (
        rig.sample(
            "jibri_autoscaler_cloudwatch_changes_total",
            pool="recorders",
            object="alarm",
            change="update",
        )
        == 1.0
    )


async def test_alarms_sync_when_due_or_when_the_spec_changes() -> None:
    """Alarms are read every resync, or at once after a spec change, not on every pass."""
    rig = Rig()
    pool = _pool([FEW_FREE])
    await rig.round(pool)
    reads = rig.cloudwatch.calls.count("DescribeAlarms")
    rig.now += 5
    await rig.round(pool)
    assert rig.cloudwatch.calls.count("DescribeAlarms") == reads
    changed = _pool([{**FEW_FREE, "threshold": 2}])
    await rig.round(changed)
    assert rig.cloudwatch.alarms[PREFIX + "few-free"]["Threshold"] == 2.0
    reads = rig.cloudwatch.calls.count("DescribeAlarms")
    rig.now += 15
    await rig.round(changed)
    assert rig.cloudwatch.calls.count("DescribeAlarms") > reads


async def test_removed_alarm_is_deleted_and_unmanaged_ones_are_left_alone() -> None:
    """Only alarms with the pool's prefix and tag are deleted; others are never touched."""
    rig = Rig()
    rig.cloudwatch.add_by_hand("cpu-high")
    rig.cloudwatch.add_by_hand(PREFIX + "made-by-hand")
    rig.cloudwatch.add_by_hand(
        "jibri-autoscaler/other-pool/x", tags={"jibri-autoscaler:pool": "other-pool"}
    )
    await rig.round(_pool([FEW_FREE, {**FEW_FREE, "name": "second"}]))
    rig.now += 15
    await rig.round(_pool([FEW_FREE]))
    assert sorted(rig.cloudwatch.alarms) == [
        "cpu-high",
        "jibri-autoscaler/other-pool/x",
        PREFIX + "few-free",
        PREFIX + "made-by-hand",
    ]
    assert rig.cloudwatch.alarms["cpu-high"]["Threshold"] == 90.0
    assert "TagResource" not in rig.cloudwatch.calls


async def test_a_hand_made_alarm_under_a_declared_name_is_adopted() -> None:
    """Declaring an existing alarm's name takes it over: rewritten to the spec and tagged."""
    rig = Rig()
    rig.cloudwatch.add_by_hand(PREFIX + "few-free")
    await rig.round(_pool([FEW_FREE]))
    alarm = rig.cloudwatch.alarms[PREFIX + "few-free"]
    assert alarm["MetricName"] == "FreeInstances"
    assert rig.cloudwatch.tags[alarm["AlarmArn"]]["jibri-autoscaler:pool"] == "recorders"
    rig.now += 15
    await rig.round(_pool([]))
    assert PREFIX + "few-free" not in rig.cloudwatch.alarms


async def test_fallback_creates_policy_and_alarm_pointing_at_it() -> None:
    """Fallback scaling creates the step policy and an alarm whose action is its ARN."""
    rig = Rig()
    await rig.round(_pool(fallbackScaling={}))
    ((group, name), policy), *_ = rig.policies.policies.items()
    assert (group, name) == ("jibri-recorders", "jibri-autoscaler-fallback-scale-out")
    assert policy["PolicyType"] == "StepScaling"
    alarm = rig.cloudwatch.alarms[PREFIX + "fallback-scale-out"]
    assert alarm["AlarmActions"] == [policy["PolicyARN"]]
    assert (alarm["MetricName"], alarm["Statistic"], alarm["EvaluationPeriods"]) == (
        "JibriFree",
        "Sum",
        13,
    )
    status = rig.sync.pool_status("recorders")
    assert status is not None
    assert status["fallbackScaling"]["policyArn"] == policy["PolicyARN"]
    assert [a["role"] for a in status["alarms"]] == ["fallback"]


async def test_fallback_policy_drift_is_corrected_keeping_its_arn() -> None:
    """A policy edited by hand is rewritten; the alarm still points at the same ARN."""
    rig = Rig()
    pool = _pool(fallbackScaling={})
    await rig.round(pool)
    key = ("jibri-recorders", "jibri-autoscaler-fallback-scale-out")
    arn = rig.policies.policies[key]["PolicyARN"]
    rig.policies.policies[key]["StepAdjustments"] = [{"ScalingAdjustment": 10}]
    rig.now += 15
    await rig.round(pool)
    assert rig.policies.policies[key]["StepAdjustments"][0]["ScalingAdjustment"] == 1
    assert rig.cloudwatch.alarms[PREFIX + "fallback-scale-out"]["AlarmActions"] == [arn]


async def test_unreadable_policy_keeps_the_fallback_alarm() -> None:
    """While the policy cannot be read, its alarm is neither rewritten nor deleted."""
    rig = Rig()
    pool = _pool(fallbackScaling={})
    await rig.round(pool)
    rig.policies.failing["DescribePolicies"] = "throttled"
    rig.now += 15
    await rig.round(pool)
    assert PREFIX + "fallback-scale-out" in rig.cloudwatch.alarms
    status = rig.sync.pool_status("recorders")
    assert status is not None and "fallback-scaling" in status["errors"]
    assert [a["state"] for a in status["alarms"]] == ["INSUFFICIENT_DATA"]


async def test_removing_fallback_deletes_alarm_and_policy() -> None:
    """Dropping fallbackScaling from the spec deletes its alarm and its policy."""
    rig = Rig()
    await rig.round(_pool(fallbackScaling={}))
    await rig.round(_pool())
    assert rig.cloudwatch.alarms == {}
    assert rig.policies.policies == {}


async def test_dry_run_reads_but_writes_nothing() -> None:
    """In dry-run mode nothing is published, created, tagged or deleted; changes are counted."""
    rig = Rig(dry_run=True)
    rig.cloudwatch.add_by_hand(PREFIX + "old", tags={"jibri-autoscaler:pool": "recorders"})
    await rig.round(_pool([FEW_FREE], fallbackScaling={}))
    writes = {"PutMetricData", "PutMetricAlarm", "DeleteAlarms", "TagResource", "PutScalingPolicy"}
    assert not writes & set(rig.cloudwatch.calls + rig.policies.calls)
    assert list(rig.cloudwatch.alarms) == [PREFIX + "old"]
    assert (
        rig.sample(
            "jibri_autoscaler_cloudwatch_changes_total",
            pool="recorders",
            object="alarm",
            change="delete",
        )
        == 1.0
    )


async def test_status_shows_each_alarm_state_as_last_read() -> None:
    """/status lists every managed alarm with its state, reason and time as last read."""
    rig = Rig()
    pool = _pool([FEW_FREE])
    await rig.round(pool)
    rig.cloudwatch.alarms[PREFIX + "few-free"]["StateValue"] = "ALARM"
    rig.now += 15
    await rig.round(pool)
    status = rig.sync.pool_status("recorders")
    assert status is not None
    (alarm,) = status["alarms"]
    assert (alarm["name"], alarm["state"], alarm["role"]) == (
        PREFIX + "few-free",
        "ALARM",
        "declared",
    )
    assert alarm["updatedAt"] == "2026-01-01T00:00:00+00:00"
    assert rig.sync.pool_status("unknown") is None


async def test_the_step_returns_at_once_and_bursts_coalesce() -> None:
    """The loop never waits on CloudWatch, and passes arriving during a round coalesce."""
    rig = Rig()
    rig.cloudwatch.gate = asyncio.Event()
    pool = _pool()
    await rig.sync(pool, OBSERVED, _plan(busy=0))
    await asyncio.wait_for(rig.cloudwatch.entered.wait(), timeout=10)
    for busy in range(1, 10):
        await rig.sync(pool, OBSERVED, _plan(busy=busy))
    assert rig.cloudwatch.published == []
    rig.cloudwatch.gate.set()
    for _ in range(1000):
        if len(rig.cloudwatch.published) >= 2:
            break
        await asyncio.sleep(0.01)
    await rig.sync.close()
    busy_values = [
        d.value
        for _, data in rig.cloudwatch.published
        for d in data
        if d.metric_name == "BusyInstances"
    ]
    assert busy_values == [0.0, 9.0]


async def test_retain_stops_workers_of_removed_pools() -> None:
    """A pool that left the desired state loses its worker and its series."""
    rig = Rig()
    await rig.sync(_pool(), OBSERVED, _plan())
    await rig.sync.retain([])
    assert rig.sync.pool_status("recorders") is None
    labels = {"pool": "recorders", "step": "metrics"}
    assert (
        rig.metrics.registry.get_sample_value("jibri_autoscaler_cloudwatch_errors_total", labels)
        is None
    )
    await rig.sync.close()


@pytest.mark.parametrize("operation", ["DescribeAlarms", "PutMetricAlarm", "ListTagsForResource"])
async def test_alarm_failures_are_reported_and_retried(operation: str) -> None:
    """A failing alarm call is reported under `alarms` and the next due sync retries it."""
    rig = Rig()
    rig.cloudwatch.add_by_hand(PREFIX + "old", tags={"jibri-autoscaler:pool": "recorders"})
    rig.cloudwatch.failing[operation] = "other"
    pool = _pool([FEW_FREE])
    await rig.round(pool)
    status = rig.sync.pool_status("recorders")
    assert status is not None and "alarms" in status["errors"]
    del rig.cloudwatch.failing[operation]
    rig.now += 15
    await rig.round(pool)
    assert sorted(rig.cloudwatch.alarms) == [PREFIX + "few-free"]
    status = rig.sync.pool_status("recorders")
    assert status is not None and status["errors"] == {}


async def test_a_pool_without_fallback_checks_for_a_leftover_policy_once() -> None:
    """Without fallbackScaling, a leftover policy is looked for once, not on every sync."""
    rig = Rig()
    pool = _pool()
    for _ in range(3):
        await rig.round(pool)
        rig.now += 15
    assert rig.policies.calls == ["DescribePolicies"]


def test_status_table_lists_alarms() -> None:
    """`controller status` prints each managed alarm with its role, state and corrections."""
    document = {
        "pools": [
            {
                "name": "recorders",
                "autoScalingGroup": {"name": "jibri-recorders"},
                "spec": {"targetFree": 2},
                "counts": {},
                "conditions": [],
                "instances": [],
                "cloudWatch": {
                    "alarms": [
                        {
                            "name": PREFIX + "few-free",
                            "role": "declared",
                            "state": "ALARM",
                            "updatedAt": "2026-01-01T00:00:00+00:00",
                            "corrected": ["threshold", "period"],
                        }
                    ]
                },
            }
        ]
    }
    lines = render(document).splitlines()
    header = lines.index("recorders: alarms")
    assert lines[header + 1].split() == ["ALARM", "ROLE", "STATE", "SINCE", "CORRECTED"]
    assert lines[header + 2].split() == [
        PREFIX + "few-free",
        "declared",
        "ALARM",
        "2026-01-01T00:00:00+00:00",
        "threshold,period",
    ]


async def test_a_dead_worker_is_replaced_on_the_next_pass() -> None:
    """If a pool's worker task ever dies, the next pass starts a new one."""
    rig = Rig()
    pool = _pool()
    await rig.sync(pool, OBSERVED, _plan())
    await asyncio.wait_for(rig.cloudwatch.entered.wait(), timeout=10)
    state = rig.sync._pools["recorders"]
    assert state.task is not None
    state.task.cancel()
    await asyncio.gather(state.task, return_exceptions=True)
    await rig.sync(pool, OBSERVED, _plan(busy=1))
    for _ in range(1000):
        if len(rig.cloudwatch.published) >= 2:
            break
        await asyncio.sleep(0.01)
    await rig.sync.close()
    assert len(rig.cloudwatch.published) == 2
