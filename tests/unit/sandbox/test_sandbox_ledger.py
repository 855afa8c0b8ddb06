from __future__ import annotations

import json

import pytest

from sandbox.controlplane import parse_action, problem_of
from sandbox.ledger import ActionEvent, BusyTermination, Ledger, render_summary, summarize
from sandbox.runner import uploaded_sessions


def _line(**fields: object) -> bytes:
    return json.dumps({"ts": 1000.0, "level": "info", **fields}).encode() + b"\n"


def test_done_actions_are_parsed_with_reason_instances_and_run_time() -> None:
    """A done action line becomes an event at its time into the run, with its details."""
    line = _line(
        event="action",
        outcome="done",
        pool="recorders",
        action="scale-out",
        reason="below-target-free",
        capacity=4,
        previous=2,
    )
    event = parse_action(line, at=lambda ts: ts - 990.0)
    assert event == ActionEvent(10.0, "recorders", "scale-out", "below-target-free", (), "2 → 4")
    drain = _line(event="action", outcome="done", action="drain", reason="idle-excess",
                  instance_ids=["i-1"])  # fmt: skip
    assert parse_action(drain, at=lambda ts: 0.0).instance_ids == ("i-1",)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(_line(event="action", outcome="failed", action="drain"), id="failed"),
        pytest.param(_line(event="action", outcome="planned", action="drain"), id="dry-run"),
        pytest.param(_line(event="reconcile failed"), id="other-event"),
        pytest.param(b"not json\n", id="not-json"),
        pytest.param(b"[1, 2]\n", id="not-an-object"),
    ],
)
def test_lines_that_are_not_done_actions_are_ignored(line: bytes) -> None:
    """Only actions carried out count: failed, planned and other lines are not actions."""
    assert parse_action(line, at=lambda ts: ts) is None


def test_errors_and_tracebacks_of_the_controller_are_problems() -> None:
    """Error lines and a bare traceback become one-line problems; info lines do not."""
    error = _line(level="error", event="task has failed", task="reconcile:recorders")
    assert problem_of(error) == "controller: task has failed (reconcile:recorders)"
    assert problem_of(b"Traceback (most recent call last):\n") is not None
    assert problem_of(_line(event="pool added")) is None


def test_a_session_is_uploaded_only_with_its_media_and_metadata() -> None:
    """Both the media file and metadata.json must be in the bucket, under the session's key."""
    keys = [
        "recordings/2026/01/31/rec-0001/room_1.mp4",
        "recordings/2026/01/31/rec-0001/metadata.json",
        "recordings/2026/01/31/rec-0002/room_2.mp4",
        "recordings/2026/01/31/rec-0099/metadata.json",
    ]
    assert uploaded_sessions(keys, {"rec-0001", "rec-0002", "rec-0003"}) == {"rec-0001"}


def _ledger() -> Ledger:
    ledger = Ledger()
    for session in ("rec-1", "rec-2"):
        ledger.request()
        ledger.start(session, "i-1", 1.0)
        ledger.end(session, 5.0, finalized=True)
    ledger.request()
    ledger.miss()
    ledger.tick(3, 60.0)
    ledger.action(ActionEvent(2.0, "p", "scale-out", "below-target-free"))
    ledger.action(ActionEvent(9.0, "p", "terminate", "drained", ("i-2",)))
    return ledger


def test_a_run_with_every_recording_in_the_bucket_is_ok() -> None:
    """All finished recordings uploaded and no busy termination: ok, exit-worthy summary."""
    ledger = _ledger()
    ledger.mark_uploaded({"rec-1", "rec-2"})
    summary = summarize(ledger, 60.0, [])
    assert summary.ok
    assert (summary.recordings_served, summary.recordings_missed) == (2, 1)
    assert (summary.scale_outs, summary.scale_ins, summary.instance_minutes) == (1, 1, 3.0)
    assert summary.actions_by_reason == {
        "scale-out/below-target-free": 1,
        "terminate/drained": 1,
    }
    assert json.loads(summary.to_json())["ok"] is True
    assert "result: OK" in render_summary(summary)


def test_a_finished_recording_missing_from_the_bucket_is_lost() -> None:
    """A finished recording not in the bucket makes the run unsafe and is named."""
    ledger = _ledger()
    ledger.mark_uploaded({"rec-1"})
    summary = summarize(ledger, 60.0, [])
    assert not summary.ok
    assert (summary.recordings_lost, summary.lost_sessions) == (1, ["rec-2"])
    text = render_summary(summary)
    assert "result: UNSAFE" in text and "lost: rec-2" in text


def test_busy_terminations_and_problems_make_the_run_unsafe() -> None:
    """A busy termination, or any other problem, fails the run with its reason."""
    ledger = _ledger()
    ledger.mark_uploaded({"rec-1", "rec-2"})
    ledger.start("rec-3", "i-3", 7.0)
    ledger.interrupt(BusyTermination(8.0, "i-3", ("rec-3",), "Terminating"))
    summary = summarize(ledger, 60.0, ["the controller exited with code 1 during the run"])
    assert summary.unsafe == [
        "1 busy instance(s) terminated",
        "the controller exited with code 1 during the run",
    ]
    assert summary.recordings_interrupted == 1
