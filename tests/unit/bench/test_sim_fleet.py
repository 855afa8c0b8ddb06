"""The simulated world: Auto Scaling group, Jibri VMs and Jicofo's choice of recorder."""

from __future__ import annotations

import random

import pytest

from bench.sim.clock import Simulation
from bench.sim.demand import Recording
from bench.sim.fleet import (
    IN_SERVICE,
    PENDING,
    TERMINATING,
    Event,
    Instance,
    SimulatedWorld,
    WorldSettings,
)


class Events:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.seen: list[tuple[float, str, Event]] = []

    def on_instance(self, instance: Instance, event: Event) -> None:
        self.seen.append((self.sim.now, instance.instance_id, event))


def world(**overrides: float) -> WorldSettings:
    settings = {"boot_mean": 90.0, "boot_spread": 0.0, "grace": 0.0, "shutdown_delay": 30.0}
    return WorldSettings(**{**settings, **overrides})


def make(
    initial: int = 0, *, min_size: int = 0, max_size: int = 10, **overrides: float
) -> tuple[Simulation, SimulatedWorld, Events]:
    sim = Simulation()
    fleet = SimulatedWorld(
        sim,
        world(**overrides),
        name="jibri",
        min_size=min_size,
        max_size=max_size,
        rng=random.Random(7),
    )
    events = Events(sim)
    fleet.listener = events
    fleet.start(initial)
    return sim, fleet, events


def rec(start: float, duration: float = 600.0, index: int = 0) -> Recording:
    return Recording(index, start, duration)


def test_instance_takes_recordings_only_after_its_boot_time() -> None:
    """A launched VM is Pending and gets no recording until its boot time has passed."""
    sim, fleet, events = make(boot_mean=90.0)
    fleet.set_desired(1)
    (instance,) = fleet.instances.values()
    sim.at(89.0, fleet.request, rec(89.0))
    sim.at(91.0, fleet.request, rec(91.0, index=1))
    sim.run(89.5)
    assert instance.lifecycle == PENDING
    assert fleet.tally.missed == 1
    sim.run(100.0)
    assert instance.lifecycle == IN_SERVICE
    assert instance.recording is not None and instance.recording.index == 1
    assert [(t, e) for t, _, e in events.seen] == [(90.0, Event.BOOTED), (91.0, Event.BUSY)]


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in range(5)])
def test_boot_times_stay_within_the_configured_spread(seed: int) -> None:
    """Every launch boots between boot_mean - boot_spread and boot_mean + boot_spread."""
    sim = Simulation()
    fleet = SimulatedWorld(
        sim,
        world(boot_mean=90.0, boot_spread=30.0),
        name="jibri",
        min_size=0,
        max_size=50,
        rng=random.Random(seed),
    )
    events = Events(sim)
    fleet.listener = events
    fleet.start(0)
    fleet.set_desired(50)
    sim.run(200.0)
    boots = [t for t, _, e in events.seen if e is Event.BOOTED]
    assert len(boots) == 50
    assert all(60.0 <= t <= 120.0 for t in boots)
    assert max(boots) - min(boots) > 20.0


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        pytest.param(-3, 1, id="below-min"),
        pytest.param(4, 4, id="within"),
        pytest.param(99, 6, id="above-max"),
    ],
)
def test_desired_capacity_is_clamped_to_the_bounds(asked: int, expected: int) -> None:
    """SetDesiredCapacity never leaves [min, max]."""
    _, fleet, _ = make(1, min_size=1, max_size=6)
    fleet.set_desired(asked)
    assert fleet.desired == expected
    assert len(fleet.live()) == expected


def test_scale_in_skips_protected_instances_until_protection_drops() -> None:
    """The ASG takes only unprotected victims, and takes the rest once protection is dropped."""
    sim, fleet, _ = make(3)
    ids = sorted(fleet.instances)
    fleet.set_protection(ids, True)
    fleet.set_desired(1)
    assert all(i.lifecycle == IN_SERVICE for i in fleet.instances.values())
    fleet.set_protection(ids[:1], False)
    assert fleet.instances[ids[0]].lifecycle == TERMINATING
    assert sum(1 for i in fleet.instances.values() if i.lifecycle == TERMINATING) == 1
    sim.run(60.0)
    assert sorted(fleet.instances) == ids[1:]


def test_terminating_a_recording_instance_counts_a_busy_termination_and_a_lost_recording() -> None:
    """An unprotected VM that records when the ASG scales in loses its recording."""
    sim, fleet, _ = make(1)
    fleet.request(rec(0.0))
    fleet.set_desired(0)
    sim.run(60.0)
    assert fleet.tally.busy_terminations == 1
    assert fleet.tally.lost == 1


def test_recording_started_while_terminating_is_lost() -> None:
    """A VM still in the brewery while it shuts down can be handed a recording, which dies."""
    sim, fleet, _ = make(1, shutdown_delay=30.0)
    fleet.set_desired(0)
    sim.at(10.0, fleet.request, rec(10.0))
    sim.run(60.0)
    assert fleet.tally.missed == 0
    assert (fleet.tally.busy_terminations, fleet.tally.lost) == (1, 1)


def test_terminate_with_decrement_at_min_is_refused() -> None:
    """AWS refuses a decrement below min; the call is counted and nothing is terminated."""
    _, fleet, _ = make(1, min_size=1)
    (instance_id,) = fleet.instances
    assert not fleet.terminate(instance_id, decrement=True)
    assert fleet.tally.rejected_calls == 1
    assert fleet.instances[instance_id].lifecycle == IN_SERVICE


def test_terminate_without_decrement_launches_a_replacement() -> None:
    """A replace keeps desired capacity, so the ASG launches a new instance at once."""
    _, fleet, _ = make(2, min_size=1)
    victim = sorted(fleet.instances)[0]
    assert fleet.terminate(victim, decrement=False)
    assert fleet.desired == 2
    assert len(fleet.live()) == 2 and victim not in {i.instance_id for i in fleet.live()}


def test_jicofo_hands_a_request_to_the_first_joined_idle_jibri() -> None:
    """Requests go to idle Jibris in join order, so later ones stay idle longer."""
    _, fleet, _ = make(3)
    first, second, third = sorted(fleet.instances.values(), key=lambda i: i.seq)
    fleet.request(rec(0.0, index=0))
    fleet.request(rec(0.0, index=1))
    assert first.recording is not None and second.recording is not None
    assert third.recording is None


def test_request_waits_up_to_grace_then_is_missed() -> None:
    """With no idle Jibri a request waits `grace` seconds; served in time it is not missed."""
    sim, fleet, _ = make(0, grace=30.0, boot_mean=20.0)
    fleet.request(rec(0.0, index=0))
    fleet.set_desired(1)
    sim.run(25.0)
    assert (fleet.tally.missed, fleet.tally.waited) == (0, 1)
    assert fleet.tally.waits == [20.0]
    sim.at(30.0, fleet.request, rec(30.0, index=1))
    sim.run(100.0)
    assert fleet.tally.missed == 1
    assert fleet.tally.waits[-1] == float("inf")


def test_graceful_shutdown_finishes_the_recording_before_jibri_stops() -> None:
    """A busy Jibri asked to shut down keeps recording, takes nothing new, then stops."""
    sim, fleet, events = make(2, jibri_exit=2.0)
    busy = min(fleet.instances.values(), key=lambda i: i.seq)
    fleet.request(rec(0.0, duration=100.0))
    fleet.graceful_shutdown(busy.instance_id)
    fleet.request(rec(1.0, index=1))
    assert busy.recording is not None and busy.recording.index == 0
    sim.run(200.0)
    stopped = [t for t, i, e in events.seen if e is Event.STOPPED]
    assert stopped == [102.0]
    assert not busy.jibri_up and fleet.tally.lost == 0


def test_instance_hours_bill_from_launch_to_the_end_of_shutdown() -> None:
    """An instance is billed while it boots, runs and shuts down, not after it is gone."""
    sim, fleet, _ = make(0, boot_mean=90.0, shutdown_delay=30.0)
    fleet.set_desired(1)
    sim.run(600.0)
    fleet.set_desired(0)
    sim.run(3600.0)
    fleet.finish()
    assert fleet.tally.instance_seconds == pytest.approx(630.0)
