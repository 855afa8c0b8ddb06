"""What every simulated policy provides."""

from __future__ import annotations

from typing import Protocol

from bench.sim.fleet import Instance, SimulatedWorld


class Policy(Protocol):
    name: str
    """Short key used on the command line and in the JSON output."""
    label: str
    """One line saying what the policy is, for the table."""

    def attach(self, fleet: SimulatedWorld) -> None:
        """Subscribe to the fleet and schedule the policy's own periodic work."""

    def stats(self) -> dict[str, float]:
        """Policy-specific counters for the JSON output (e.g. planner passes)."""
        ...


def cron_minute(fleet: SimulatedWorld) -> tuple[int, int]:
    """The classic per-VM cron job, run on every booted VM at the top of the minute: publish
    JibriFree (1 idle, 0 busy) and set the VM's scale-in protection to match its busy state.
    Returns (sum of JibriFree, number of datapoints)."""
    busy: list[str] = []
    idle: list[str] = []
    instance: Instance
    for instance in fleet.instances.values():
        if instance.jibri_up:
            (busy if instance.recording is not None else idle).append(instance.instance_id)
    fleet.set_protection(busy, True)
    fleet.set_protection(idle, False)
    return len(idle), len(idle) + len(busy)
