"""What the actuator did that AWS cannot tell the next pass: the typed feedback from act to
observe, after cluster-autoscaler's `ActuationStatus`.

The actuator is the only writer (`ActuationStatus`). `observe` reads it through the read-only
`ActuationView`, and so do the report answer and /status: none of them can change it. The loop
forgets the instances that have left the group. Like the rest of the controller's memory it is
lost on restart by design (docs/design.md says how a fresh controller reads the silence).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from controller.model import ReportView


class ActuationView(Protocol):
    """Read-only access to what the actuator has done in one pool."""

    @property
    def last_scale_out_at(self) -> float | None:
        """When the actuator last raised desired capacity."""
        ...

    @property
    def drain_requested(self) -> Mapping[str, float]:
        """Instances the controller asked to drain, with when it last asked: a drained report
        counts only from a boot held since then (controller.boots)."""
        ...

    def heartbeat_sent_at(self, instance_id: str, hook: str) -> float | None:
        """When the actuator last recorded a lifecycle heartbeat for this instance and hook."""
        ...

    def completed_hooks(self, instance_id: str) -> frozenset[str]:
        """Termination hooks the actuator has completed for this instance."""
        ...


def drain_answer(actuation: ActuationView, instance_id: str, held: ReportView | None) -> bool:
    """Whether the answer to an instance's report says drain: the controller asked it to, or
    its held report says it is draining (a restarted controller never asked; it keeps on)."""
    return instance_id in actuation.drain_requested or (held is not None and held.draining)


class ActuationStatus:
    """One pool's record of the actuator's effects (see the module docstring)."""

    def __init__(self) -> None:
        self.last_scale_out_at: float | None = None
        self._drains: dict[str, float] = {}
        self._heartbeats: dict[tuple[str, str], float] = {}
        self._completed: dict[str, frozenset[str]] = {}

    @property
    def drain_requested(self) -> Mapping[str, float]:
        return self._drains

    def heartbeat_sent_at(self, instance_id: str, hook: str) -> float | None:
        return self._heartbeats.get((instance_id, hook))

    def completed_hooks(self, instance_id: str) -> frozenset[str]:
        return self._completed.get(instance_id, frozenset())

    # --- written by the actuator -------------------------------------------------------------

    def scaled_out(self, now: float) -> None:
        self.last_scale_out_at = now

    def drain_requested_now(self, instance_id: str, now: float) -> None:
        """Remember the latest request: asking again asks the boot held now."""
        self._drains[instance_id] = now

    def heartbeat_sent(self, instance_id: str, hook: str, now: float) -> None:
        self._heartbeats[instance_id, hook] = now

    def lifecycle_completed(self, instance_id: str, hook: str) -> None:
        self._completed[instance_id] = self.completed_hooks(instance_id) | {hook}
        self._heartbeats.pop((instance_id, hook), None)

    # --- written by the loop -------------------------------------------------------------------

    def forget(self, instance_ids: Iterable[str]) -> None:
        """Drop what concerns instances that have left the group."""
        gone = set(instance_ids)
        if not gone:
            return
        for instance_id in gone:
            self._drains.pop(instance_id, None)
            self._completed.pop(instance_id, None)
        if self._heartbeats:
            for key in [k for k in self._heartbeats if k[0] in gone]:
                del self._heartbeats[key]
