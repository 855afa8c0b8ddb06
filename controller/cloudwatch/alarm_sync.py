"""Keep one pool's managed alarms and its fallback scaling policy as its spec says: create what
is missing, rewrite what drifted, delete what the spec dropped, and never touch an alarm that
does not carry the pool's tag. Also remembers each alarm's state as last read, for /status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from common.logs import event
from controller.aws import AwsError
from controller.cloudwatch.alarms import (
    AlarmDefinition,
    declared_alarms,
    described,
    is_owned,
    ownership_tags,
    plan_alarms,
    put_request,
)
from controller.cloudwatch.api import CloudWatchApi, ScalingPolicyApi
from controller.cloudwatch.fallback import (
    FallbackSettings,
    described_policy,
    desired_policy,
    fallback_alarm,
    policy_diff,
    policy_request,
    resolve,
)
from controller.spec import JibriPool
from controller.spec import cloudwatch as cw_names

log = logging.getLogger("controller.cloudwatch.step")

Report = Callable[[str, Exception | None], None]
"""Told how a sub-step went: (step, None) on success, (step, error) on failure."""


@dataclass(frozen=True)
class AlarmStatus:
    """One managed alarm as last read from DescribeAlarms."""

    name: str
    state: str | None
    """OK, ALARM or INSUFFICIENT_DATA; None until the alarm was first read."""
    reason: str
    updated_at: str | None
    role: str
    """`declared` or `fallback`."""
    corrected: tuple[str, ...] = ()
    """What the last sync did to it: ("created",) or the fields found drifted and rewritten."""


@dataclass
class AlarmMemory:
    """What the sync of one pool keeps between rounds."""

    tagged: set[str] = field(default_factory=set)
    """Names of alarms known to carry the pool tag (created or checked)."""
    foreign: set[str] = field(default_factory=set)
    """Prefixed alarms without the pool tag, already logged once."""
    alarms: tuple[AlarmStatus, ...] = ()
    policy_arn: str | None = None
    policy_gone: bool = False
    """The fallback policy is known not to exist (checked since fallback was last wanted)."""


class AlarmSync:
    def __init__(self, *, changes: Counter, dry_run: bool) -> None:
        self._changes = changes
        self._dry_run = dry_run

    async def sync(
        self,
        pool: JibriPool,
        memory: AlarmMemory,
        cloudwatch: CloudWatchApi,
        policies: ScalingPolicyApi,
        report: Report,
    ) -> None:
        """One round; raises on a failed alarm call (the policy's failures go to `report`)."""
        desired = list(declared_alarms(pool))
        keep: set[str] = set()
        fallback = resolve(pool)
        fallback_name = cw_names.alarm_name(pool.name, cw_names.FALLBACK_ALARM)
        memory.policy_arn = None
        if fallback is not None:
            memory.policy_gone = False
            try:
                memory.policy_arn = await self._ensure_policy(pool, fallback, policies)
            except AwsError as exc:
                report("fallback-scaling", exc)
            else:
                report("fallback-scaling", None)
            if memory.policy_arn is None:
                keep.add(fallback_name)  # wanted, but undefinable without the policy's ARN
            else:
                desired.append(fallback_alarm(pool, fallback, memory.policy_arn))

        prefix = cw_names.alarm_prefix(pool.name)
        existing = await cloudwatch.describe_alarms(prefix)
        arns = {str(a["AlarmName"]): str(a.get("AlarmArn", "")) for a in existing}
        changes = plan_alarms(pool.name, desired, [described(a) for a in existing], keep=keep)
        tags = ownership_tags(pool)
        corrected: dict[str, tuple[str, ...]] = {}
        for alarm in changes.create:
            await self._write(pool, cloudwatch, alarm, tags, "create", ())
            memory.tagged.add(alarm.name)
            corrected[alarm.name] = ("created",)
        for update in changes.update:
            await self._adopt(pool, memory, cloudwatch, update.alarm.name, arns, tags)
            await self._write(pool, cloudwatch, update.alarm, tags, "update", update.drift)
            corrected[update.alarm.name] = update.drift
        for alarm in desired:
            if alarm.name not in corrected:
                await self._adopt(pool, memory, cloudwatch, alarm.name, arns, tags)
        deleted = await self._retire(pool, memory, cloudwatch, changes.retire, arns)

        if fallback is None and not memory.policy_gone:
            try:
                memory.policy_gone = await self._drop_policy(pool, policies)
            except AwsError as exc:
                report("fallback-scaling", exc)
            else:
                report("fallback-scaling", None)
        if (corrected or deleted) and not self._dry_run:
            existing = await cloudwatch.describe_alarms(prefix)
        memory.alarms = _statuses(existing, desired, keep, corrected, fallback_name)

    async def _write(
        self,
        pool: JibriPool,
        cloudwatch: CloudWatchApi,
        alarm: AlarmDefinition,
        tags: Mapping[str, str],
        change: str,
        drift: tuple[str, ...],
    ) -> None:
        self._changes.labels(pool.name, "alarm", change).inc()
        event(
            log,
            f"alarm {change}",
            pool=pool.name,
            alarm=alarm.name,
            drift=list(drift),
            dry_run=self._dry_run,
        )
        if not self._dry_run:
            await cloudwatch.put_metric_alarm(put_request(alarm, tags))

    async def _adopt(
        self,
        pool: JibriPool,
        memory: AlarmMemory,
        cloudwatch: CloudWatchApi,
        name: str,
        arns: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> None:
        """Make sure a declared alarm that already exists carries the pool tag. AWS ignores the
        tags of PutMetricAlarm on an existing alarm, so one made by hand under a declared name
        has to be tagged on its own."""
        arn = arns.get(name)
        if name in memory.tagged or not arn:
            return
        if not is_owned(pool.name, await cloudwatch.alarm_tags(arn)):
            self._changes.labels(pool.name, "alarm", "adopt").inc()
            event(log, "alarm adopt", pool=pool.name, alarm=name, dry_run=self._dry_run)
            if self._dry_run:
                return
            await cloudwatch.tag_alarm(arn, tags)
        memory.tagged.add(name)

    async def _retire(
        self,
        pool: JibriPool,
        memory: AlarmMemory,
        cloudwatch: CloudWatchApi,
        names: Sequence[str],
        arns: Mapping[str, str],
    ) -> tuple[str, ...]:
        doomed: list[str] = []
        for name in names:
            arn = arns.get(name, "")
            if arn and is_owned(pool.name, await cloudwatch.alarm_tags(arn)):
                doomed.append(name)
            elif name not in memory.foreign:
                memory.foreign.add(name)
                event(
                    log,
                    "alarm left alone: it has the pool's prefix but not its tag",
                    level=logging.WARNING,
                    pool=pool.name,
                    alarm=name,
                    tag=cw_names.TAG_POOL,
                )
        for name in doomed:
            self._changes.labels(pool.name, "alarm", "delete").inc()
            event(log, "alarm delete", pool=pool.name, alarm=name, dry_run=self._dry_run)
            memory.tagged.discard(name)
        if doomed and not self._dry_run:
            await cloudwatch.delete_alarms(doomed)
        return tuple(doomed)

    async def _ensure_policy(
        self, pool: JibriPool, settings: FallbackSettings, policies: ScalingPolicyApi
    ) -> str | None:
        """Create or correct the fallback policy and return its ARN (None in a dry run before
        it exists). PutScalingPolicy's answer may lack the ARN (the emulator's does), so it is
        always read back from DescribePolicies."""
        policy = desired_policy(pool, settings)
        current = await policies.describe_policy(policy.group, policy.name)
        drift: tuple[str, ...] = ()
        if current is not None:
            drift = policy_diff(policy, described_policy(current))
            if not drift:
                return str(current["PolicyARN"])
        change = "create" if current is None else "update"
        self._changes.labels(pool.name, "policy", change).inc()
        event(
            log,
            f"policy {change}",
            pool=pool.name,
            policy=policy.name,
            group=policy.group,
            drift=list(drift),
            dry_run=self._dry_run,
        )
        if self._dry_run:
            return None if current is None else str(current["PolicyARN"])
        await policies.put_policy(policy_request(policy))
        written = await policies.describe_policy(policy.group, policy.name)
        if written is None:
            raise AwsError("DescribePolicies", "not-found", f"policy {policy.name} is missing")
        return str(written["PolicyARN"])

    async def _drop_policy(self, pool: JibriPool, policies: ScalingPolicyApi) -> bool:
        """Delete a fallback policy left from an earlier spec; return whether none is left."""
        group = pool.spec.autoScalingGroupName
        if await policies.describe_policy(group, cw_names.FALLBACK_POLICY) is None:
            return True
        self._changes.labels(pool.name, "policy", "delete").inc()
        event(log, "policy delete", pool=pool.name, group=group, dry_run=self._dry_run)
        if self._dry_run:
            return False
        await policies.delete_policy(group, cw_names.FALLBACK_POLICY)
        return True


def _statuses(
    existing: Sequence[Mapping[str, Any]],
    desired: Sequence[AlarmDefinition],
    keep: Collection[str],
    corrected: Mapping[str, tuple[str, ...]],
    fallback_name: str,
) -> tuple[AlarmStatus, ...]:
    read = {str(a["AlarmName"]): a for a in existing}
    names = [a.name for a in desired] + [n for n in sorted(keep) if n in read]
    result = []
    for name in names:
        alarm: Mapping[str, Any] = read.get(name, {})
        updated = alarm.get("StateUpdatedTimestamp")
        result.append(
            AlarmStatus(
                name=name,
                state=alarm.get("StateValue"),
                reason=str(alarm.get("StateReason", "")),
                updated_at=None if updated is None else updated.isoformat(),
                role="fallback" if name == fallback_name else "declared",
                corrected=corrected.get(name, ()),
            )
        )
    return tuple(result)
