from __future__ import annotations

from typing import Any

from rich.console import Console

from sandbox.ledger import ActionEvent
from sandbox.view import SimInstance, Snapshot, render

STATUS: dict[str, Any] = {
    "dryRun": False,
    "pools": [
        {
            "name": "recorders",
            "spec": {"targetFree": 2, "capacity": {"min": 1, "max": 10}},
            "autoScalingGroup": {"name": "jibri-recorders", "desired": 4, "min": 1, "max": 10},
            "counts": {"idle": 2, "starting": 1, "busy": 1, "draining": 0, "expired": 0},
            "instances": [
                {
                    "instanceId": "i-0aaa",
                    "state": "busy",
                    "protected": True,
                    "lastReportAgeSeconds": 0.4,
                    "drainRequested": False,
                    "detail": "recording",
                },
                {
                    "instanceId": "i-0bbb",
                    "state": "starting",
                    "protected": False,
                    "lastReportAgeSeconds": None,
                    "drainRequested": False,
                    "detail": "booting, no report yet",
                },
            ],
            "conditions": [
                {
                    "type": "Reconciled",
                    "status": "False",
                    "reason": "ReconcileFailing",
                    "message": "2 failed pass(es) in a row (throttled): slow down",
                }
            ],
        }
    ],
}


def _text(snapshot: Snapshot) -> str:
    console = Console(record=True, width=150, color_system=None)
    console.print(render(snapshot))
    return console.export_text()


def _snapshot(**overrides: Any) -> Snapshot:
    fields: dict[str, Any] = {
        "elapsed": 75.0,
        "duration": 120.0,
        "phase": "running",
        "controller_url": "http://127.0.0.1:40123",
        "demand": "day pattern, 10:30, about 3.8 recordings at once",
        "served": 9,
        "missed": 1,
        "active": 2,
        "finished": 7,
        "uploaded": 6,
        "instance_minutes": 4.25,
        "sims": (
            SimInstance("i-0aaa", "running", "busy", recordings=3),
            SimInstance("i-0bbb", "booting", "-"),
        ),
        "actions": (
            ActionEvent(12.0, "recorders", "scale-out", "below-target-free"),
            ActionEvent(50.0, "recorders", "drain", "idle-excess", ("i-0ccc",)),
        ),
        "status": STATUS,
    }
    fields.update(overrides)
    return Snapshot(**fields)


def test_view_shows_capacity_counts_and_controller_urls() -> None:
    """The screen shows desired/min/max, counts by state and where /status and /metrics are."""
    text = _text(_snapshot())
    assert "01:15 / 02:00" in text
    assert "desired 4   min 1   max 10   target free 2" in text
    assert "idle 2   starting 1   busy 1" in text
    assert "http://127.0.0.1:40123/status" in text
    assert "http://127.0.0.1:40123/metrics" in text


def test_view_joins_controller_states_with_the_simulated_jibris() -> None:
    """Each instance row has the controller's state and the sandbox's view of its Jibri."""
    lines = _text(_snapshot()).splitlines()
    busy = next(line for line in lines if "i-0aaa" in line).strip("│ ").split()
    assert busy == ["i-0aaa", "busy", "yes", "0.4s", "busy", "3"]
    booting = next(line for line in lines if "i-0bbb" in line).strip("│ ").split()
    assert booting == ["i-0bbb", "starting", "-", "booting", "0"]


def test_view_lists_actions_newest_first_with_reasons() -> None:
    """The last actions appear newest first, each with its reason and instances."""
    text = _text(_snapshot())
    drain, scale_out = text.index("idle-excess"), text.index("below-target-free")
    assert drain < scale_out
    assert "i-0ccc" in text


def test_view_shows_recording_counts_and_failing_conditions() -> None:
    """Served, missed, bucket counts and a failing condition's message are on screen."""
    text = _text(_snapshot())
    assert "served 9   missed 1   recording now 2   finished 7   in the bucket 6" in text
    assert "busy instances terminated 0" in text
    assert "Reconciled False  ReconcileFailing: 2 failed pass(es) in a row (throttled)" in text


def test_view_waits_for_the_controller_without_status() -> None:
    """Before the first /status answer, the screen says what it is waiting for."""
    text = _text(_snapshot(status=None, status_error="controller not answering yet", actions=()))
    assert "controller not answering yet" in text
    assert "none yet" in text


def test_view_without_duration_says_how_to_stop() -> None:
    """An open-ended run tells the user how to stop it."""
    assert "Ctrl-C to stop" in _text(_snapshot(duration=None))


def test_view_shows_the_target_in_force_and_its_parts() -> None:
    """With a readiness block in /status, the pool shows the target in force, its parts, the
    boot horizon and the last hour's miss rate."""
    pool = {
        **STATUS["pools"][0],
        "readiness": {
            "target": {
                "total": 12,
                "floor": 2,
                "schedule": {"rule": None, "override": None},
                "forecast": 9,
                "reactive": 3,
                "later": 14,
            },
            "override": None,
            "bootHorizonSeconds": 150.0,
            "history": {"minutes": 840},
            "missed": {"lastHour": {"started": 38, "missed": 2, "rate": 0.05}},
        },
    }
    text = _text(_snapshot(status={**STATUS, "pools": [pool]}))
    assert (
        "target in force 12   floor 2   forecast 9   reactive 3   later 14   horizon 150s"
        "   history 840 min   missed 1h 5.0% (2/40)"
    ) in text
