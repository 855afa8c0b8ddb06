"""spec.recycle and spec.rollout: retiring tired recorders and rolling out a new Jibri image
(docs/fleet-operations.md).

Both act only on idle instances: the planner drains a recorder past its limits, or on an old
launch template version, the next time it is idle, never while it records.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, StringConstraints, model_validator

from common.durations import Duration, PositiveDuration
from common.wire import AMI_ID_RE
from controller.spec.base import SpecModel

TemplateVersion = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,9}$")]
"""A launch template version number: `$Latest` and `$Default` would not tell the instances
launched before the rollout from those launched after."""
ImageId = Annotated[str, StringConstraints(pattern=AMI_ID_RE.pattern)]


class Recycle(SpecModel):
    """Limits past which an idle recorder is replaced: Chrome, ffmpeg and Xorg degrade over
    hours of recording. Either, both or neither may be set."""

    maxRecordings: Annotated[int, Field(ge=1)] | None = None
    """Recordings finished since boot, as the agent reports them."""
    maxUptime: PositiveDuration | None = None
    """Time since boot (the agent's uptime, or since the controller first saw the instance)."""

    @property
    def enabled(self) -> bool:
        return self.maxRecordings is not None or self.maxUptime is not None


class Rollout(SpecModel):
    """Move the pool to a launch template version: canaries first, then idle instances in
    steps of scaleIn.maxStep, never a busy one."""

    launchTemplateVersion: TemplateVersion
    imageId: ImageId | None = None
    """The AMI of that version: new instances are then those whose agent reports it."""
    canaries: Annotated[int, Field(ge=1)] = 1
    """Instances launched on the new version before any old one is replaced."""
    canaryTimeout: PositiveDuration = 900.0
    """How long the canaries have to report idle and healthy on the new version."""
    healthyFor: Duration = 60.0
    """How long every canary must stay idle-or-busy and healthy before old ones go."""

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if self.healthyFor >= self.canaryTimeout:
            raise ValueError(
                f"healthyFor ({self.healthyFor:g} s) must be shorter than canaryTimeout "
                f"({self.canaryTimeout:g} s)"
            )
        return self
