"""The rollout's one AWS change (docs/fleet-operations.md): each pass, before the plan, apply
`controller.fleet.rollout.decide` and set the group's launch template version when it says so.

The decision is pure (controller/fleet/rollout.py); this module holds the memory between passes,
the narrow `LaunchTemplates` Protocol and its aiobotocore mixin.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from common.logs import event
from controller.errors import AwsError
from controller.fleet.rollout import RolloutMemory, decide
from controller.model import Observed
from controller.spec import PoolSpec

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling import AutoScalingClient

T = TypeVar("T")
log = logging.getLogger("controller.fleet.rollout")


@runtime_checkable
class LaunchTemplates(Protocol):
    """Set the version of a group's launch template (UpdateAutoScalingGroup)."""

    async def set_template_version(self, name: str, template_id: str, version: str) -> None: ...


class AioLaunchTemplates:
    """`LaunchTemplates` over the aiobotocore client of `controller.aws.AioAutoScaling`."""

    _client: AutoScalingClient

    async def _call(self, operation: str, request: Awaitable[T]) -> T:
        raise NotImplementedError

    async def set_template_version(self, name: str, template_id: str, version: str) -> None:
        await self._call(
            "UpdateAutoScalingGroup",
            self._client.update_auto_scaling_group(
                AutoScalingGroupName=name,
                LaunchTemplate={"LaunchTemplateId": template_id, "Version": version},
            ),
        )


class RolloutTracker:
    """One pool's rollout memory, and the step that applies `decide` before each plan."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.memory = RolloutMemory()

    async def observe(
        self, api: object, spec: PoolSpec, observed: Observed, now: float, *, dry_run: bool
    ) -> Observed:
        status, version = decide(spec, observed, self.memory, now)
        template = observed.asg.template_id
        if version is not None and template is not None and isinstance(api, LaunchTemplates):
            event(
                log,
                "launch template version",
                pool=self.pool,
                version=version,
                previous=observed.asg.template_version,
                dry_run=dry_run,
            )
            if not dry_run:
                await self._switch(api, spec.autoScalingGroupName, template, version)
        return observed if status is None else replace(observed, rollout=status)

    async def _switch(self, api: LaunchTemplates, group: str, template: str, version: str) -> None:
        """Set the version; a failure is logged and retried next pass, never fails the pass."""
        try:
            await api.set_template_version(group, template, version)
        except AwsError as exc:
            event(
                log,
                "launch template version not set",
                level=logging.WARNING,
                pool=self.pool,
                kind=exc.kind,
                error=str(exc),
            )
