"""spec.warmPool: the Auto Scaling warm pool the controller keeps on the pool's group
(docs/warm-pools.md).

The fields are AWS's PutWarmPool parameters under the spec's names. Absent, the controller
keeps no warm pool, and deletes one only if it created it (the group's ownership tag).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from controller.spec.base import SpecModel

WarmState = Literal["Stopped", "Hibernated", "Running"]


class WarmPool(SpecModel):
    """Pre-initialised instances the group draws on first when its desired capacity rises."""

    minSize: Annotated[int, Field(ge=0)] = 0
    """Instances kept in the warm pool at least, whatever the group's size."""
    maxPreparedCapacity: Annotated[int, Field(ge=0)] | None = None
    """Most instances in the group and its warm pool together (AWS's MaxGroupPreparedCapacity);
    absent, the group's MaxSize, as AWS has it."""
    state: WarmState = "Stopped"
    """What a warmed instance waits as: Stopped pays for EBS only; Hibernated keeps memory
    (the launch template must enable hibernation); Running pays for the instance."""
    reuseOnScaleIn: bool = False
    """Return instances to the warm pool on scale-in instead of terminating them."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        cap = self.maxPreparedCapacity
        if cap is not None and self.minSize > cap:
            raise ValueError(
                f"minSize ({self.minSize}) must not exceed maxPreparedCapacity ({cap})"
            )
        return self
