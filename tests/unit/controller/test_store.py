"""The report store: latest report per instance, streaks, ordering, and the unmanaged map."""

from __future__ import annotations

import pytest

from common.wire import BusyStatus, HealthStatus, JibriStatus, Report
from controller.store import Outcome, ReportStore

IID = "i-0123456789abcdef0"


def report(
    seq: int,
    busy: str = "IDLE",
    health: str = "HEALTHY",
    *,
    instance_id: str = IID,
    boot: str = "boot-a",
    draining: bool = False,
    drained: bool = False,
    uploads: int = 0,
) -> Report:
    return Report(
        instanceId=instance_id,
        bootId=boot,
        seq=seq,
        jibri=JibriStatus(busyStatus=BusyStatus(busy), healthStatus=HealthStatus(health)),
        draining=draining,
        drained=drained,
        pendingUploads=uploads,
    )


def test_idle_streak_starts_at_first_idle_report() -> None:
    """idle_since stays at the first report of an IDLE streak while it continues."""
    store = ReportStore()
    store.accept(report(1), 10.0, managed=True)
    store.accept(report(2), 15.0, managed=True)
    view = store.get(IID)
    assert view is not None and view.idle_since == 10.0 and view.received_at == 15.0


@pytest.mark.parametrize(
    "breaking",
    [
        pytest.param(report(2, "BUSY"), id="busy"),
        pytest.param(report(2, health="UNHEALTHY"), id="unhealthy"),
        pytest.param(report(2, uploads=1), id="uploads-pending"),
        pytest.param(report(2, draining=True), id="draining"),
    ],
)
def test_idle_streak_restarts_after_a_break(breaking: Report) -> None:
    """Any non-idle report ends the idle streak; the next IDLE report starts a new one."""
    store = ReportStore()
    store.accept(report(1), 10.0, managed=True)
    store.accept(breaking, 20.0, managed=True)
    broken = store.get(IID)
    assert broken is not None and broken.idle_since is None
    store.accept(report(3), 30.0, managed=True)
    again = store.get(IID)
    assert again is not None and again.idle_since == 30.0


def test_unhealthy_streak_tracks_first_unhealthy_report() -> None:
    """unhealthy_since holds the start of a not-HEALTHY (or Jibri UNKNOWN) streak."""
    store = ReportStore()
    store.accept(report(1, health="UNHEALTHY"), 5.0, managed=True)
    store.accept(report(2, "UNKNOWN", "UNKNOWN"), 9.0, managed=True)
    view = store.get(IID)
    assert view is not None and view.unhealthy_since == 5.0
    store.accept(report(3), 12.0, managed=True)
    healed = store.get(IID)
    assert healed is not None and healed.unhealthy_since is None


def test_duplicate_report_is_ignored() -> None:
    """A report with the held seq again (same bootId: a retry) changes nothing."""
    store = ReportStore()
    store.accept(report(5, "BUSY"), 1.0, managed=True)
    result = store.accept(report(5), 2.0, managed=True)
    view = store.get(IID)
    assert result.outcome is Outcome.OUT_OF_ORDER and not result.changed
    assert view is not None and view.busy is BusyStatus.BUSY and view.received_at == 1.0


def test_seq_going_back_is_a_second_sender() -> None:
    """A report of the held boot with a lower seq (a second sender with the same boot and
    credential) is not taken, but conflicts the instance at once, remembering the busy
    report; the lower seq's successor is heard again."""
    store = ReportStore()
    store.accept(report(5, "BUSY"), 1.0, managed=True)
    result = store.accept(report(4, drained=True), 2.0, managed=True)
    view = store.get(IID)
    assert result.outcome is Outcome.OUT_OF_ORDER and result.changed
    assert view is not None and view.busy is BusyStatus.BUSY and not view.drained
    assert view.received_at == 1.0 and view.boot_since == 2.0
    assert (view.rival_boot, view.rival_since, view.rival_busy_at) == ("boot-a", 2.0, 1.0)
    assert store.accept(report(5), 3.0, managed=True).outcome is Outcome.ACCEPTED


def test_new_boot_id_resets_sequence() -> None:
    """After an agent restart (new bootId) a lower seq is accepted."""
    store = ReportStore()
    store.accept(report(50, "BUSY"), 1.0, managed=True)
    result = store.accept(report(0, boot="boot-b"), 2.0, managed=True)
    view = store.get(IID)
    assert result.outcome is Outcome.ACCEPTED
    assert view is not None and view.busy is BusyStatus.IDLE


def test_changed_only_when_derived_state_changes() -> None:
    """`changed` is true for the first report and real changes, false for repeats."""
    store = ReportStore()
    assert store.accept(report(1), 1.0, managed=True).changed
    assert not store.accept(report(2), 2.0, managed=True).changed
    assert store.accept(report(3, "BUSY"), 3.0, managed=True).changed
    assert store.accept(report(4, "BUSY", uploads=2), 4.0, managed=True).changed
    assert not store.accept(report(5, "BUSY", uploads=3), 5.0, managed=True).changed


def test_unmanaged_map_is_bounded_oldest_first() -> None:
    """Reports of ids in no ASG are held in a bounded map that evicts the oldest."""
    store = ReportStore(max_unmanaged=2)
    ids = ["i-00000001", "i-00000002", "i-00000003"]
    for n, instance_id in enumerate(ids):
        store.accept(report(1, instance_id=instance_id), float(n), managed=False)
    assert store.unmanaged_count == 2
    assert store.get(ids[0]) is None and store.get(ids[2]) is not None


def test_adopt_moves_held_report_to_managed() -> None:
    """An id that shows up in an ASG keeps its held report, now safe from eviction."""
    store = ReportStore(max_unmanaged=1)
    store.accept(report(1, "BUSY"), 1.0, managed=False)
    store.adopt([IID])
    store.accept(report(1, instance_id="i-00000009"), 2.0, managed=False)
    store.accept(report(1, instance_id="i-0000000a"), 3.0, managed=False)
    view = store.get(IID)
    assert view is not None and view.busy is BusyStatus.BUSY
    assert store.unmanaged_count == 1


def test_expire_unmanaged_drops_only_old_reports() -> None:
    """expire_unmanaged removes held reports received before the cut-off, not managed ones."""
    store = ReportStore()
    store.accept(report(1, instance_id="i-00000001"), 1.0, managed=False)
    store.accept(report(1, instance_id="i-00000002"), 9.0, managed=False)
    store.accept(report(1, instance_id="i-00000003"), 1.0, managed=True)
    assert store.expire_unmanaged(older_than=5.0) == 1
    assert store.get("i-00000001") is None
    assert store.get("i-00000002") is not None and store.get("i-00000003") is not None


def test_release_forgets_managed_instance() -> None:
    """release drops the reports of instances that left every ASG."""
    store = ReportStore()
    store.accept(report(1), 1.0, managed=True)
    store.release([IID])
    assert store.get(IID) is None and len(store) == 0


def test_jibri_seen_sticks_once_jibri_answered() -> None:
    """jibri_seen is false until a report shows Jibri answering, then stays true."""
    store = ReportStore()
    first = Report.model_validate(
        {
            "instanceId": "i-0123456789abcdef0",
            "bootId": "b",
            "seq": 1,
            "jibri": {"busyStatus": "UNKNOWN", "healthStatus": "UNKNOWN"},
        }
    )
    store.accept(first, 1.0, managed=True)
    assert store.get(first.instanceId).jibri_seen is False  # type: ignore[union-attr]
    up = first.model_copy(
        update={
            "seq": 2,
            "jibri": JibriStatus(busyStatus=BusyStatus.IDLE, healthStatus=HealthStatus.HEALTHY),
        }
    )
    store.accept(up, 2.0, managed=True)
    down = first.model_copy(update={"seq": 3})
    store.accept(down, 3.0, managed=True)
    assert store.get(first.instanceId).jibri_seen is True  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(report(1), id="idle"),
        pytest.param(report(1, "BUSY", uploads=2), id="busy-uploading"),
        pytest.param(report(1, health="UNHEALTHY"), id="unhealthy"),
        pytest.param(report(1, "UNKNOWN", "UNKNOWN"), id="jibri-not-seen"),
        pytest.param(report(1, draining=True, drained=True), id="drained"),
    ],
)
def test_a_heartbeat_only_freshens_the_held_report(first: Report) -> None:
    """A report repeating the held state (a heartbeat) moves only received_at and seq: the
    streaks and what the planner derives stay, and it changes nothing to plan on."""
    store = ReportStore()
    store.accept(first, 10.0, managed=True)
    before = store.get(IID)
    accepted = store.accept(first.model_copy(update={"seq": 2}), 15.0, managed=True)
    after = store.get(IID)
    assert accepted.outcome is Outcome.ACCEPTED and not accepted.changed
    assert before is not None and after == before._replace(received_at=15.0)
    stale = store.accept(first.model_copy(update={"seq": 2}), 20.0, managed=True)
    assert stale.outcome is Outcome.OUT_OF_ORDER and store.get(IID) == after


# --- boots: how the held boot came to be held (controller.boots) ---------------------------


def test_first_boot_has_no_rival() -> None:
    """The first boot seen is held since its first report, with no rival."""
    store = ReportStore()
    store.accept(report(1), 10.0, managed=True)
    store.accept(report(2, "BUSY"), 11.0, managed=True)
    view = store.get(IID)
    assert view is not None and view.boot_id == "boot-a" and view.boot_since == 10.0
    assert (view.rival_boot, view.rival_since, view.rival_busy_at) == (None, None, None)


def test_takeover_with_the_same_state_is_no_heartbeat() -> None:
    """A report of another boot repeating the held state is a takeover, not a heartbeat: it
    changes what the planner derives and records the boot it replaced."""
    store = ReportStore()
    store.accept(report(5), 10.0, managed=True)
    accepted = store.accept(report(1, boot="boot-b"), 11.0, managed=True)
    view = store.get(IID)
    assert accepted.outcome is Outcome.ACCEPTED and accepted.changed
    assert view is not None and view.boot_id == "boot-b" and view.boot_since == 11.0
    assert view.rival_boot == "boot-a" and view.rival_since is None


def test_second_takeover_records_when_the_first_happened() -> None:
    """Boots reporting in turn: each takeover records when the replaced boot took over."""
    store = ReportStore()
    store.accept(report(5), 10.0, managed=True)
    store.accept(report(1, boot="boot-b"), 11.0, managed=True)
    store.accept(report(6), 12.0, managed=True)
    view = store.get(IID)
    assert view is not None and view.boot_id == "boot-a" and view.boot_since == 12.0
    assert view.rival_boot == "boot-b" and view.rival_since == 11.0


@pytest.mark.parametrize(
    ("earlier", "busy_at"),
    [
        pytest.param([report(1, "BUSY"), report(2, "BUSY")], 2.0, id="busy-heartbeat"),
        pytest.param([report(1, "BUSY"), report(2)], 1.0, id="busy-then-idle"),
        pytest.param([report(1), report(2, uploads=3)], 2.0, id="uploading"),
        pytest.param([report(1), report(2)], None, id="never-busy"),
    ],
)
def test_takeover_keeps_when_the_replaced_boot_last_said_busy(
    earlier: list[Report], busy_at: float | None
) -> None:
    """rival_busy_at is the replaced boot's last busy or uploading report, kept across more
    takeovers."""
    store = ReportStore()
    for n, rep in enumerate(earlier, start=1):
        store.accept(rep, float(n), managed=True)
    store.accept(report(1, boot="boot-b"), 5.0, managed=True)
    store.accept(report(1, boot="boot-c"), 6.0, managed=True)
    view = store.get(IID)
    assert view is not None and view.rival_boot == "boot-b" and view.rival_busy_at == busy_at


def test_same_boot_keeps_its_lineage() -> None:
    """Later reports of the held boot keep when it took over and from whom."""
    store = ReportStore()
    store.accept(report(5, "BUSY"), 10.0, managed=True)
    store.accept(report(1, boot="boot-b"), 11.0, managed=True)
    store.accept(report(2, "BUSY", boot="boot-b"), 12.0, managed=True)
    store.accept(report(3, boot="boot-b"), 13.0, managed=True)
    view = store.get(IID)
    assert view is not None and view.boot_since == 11.0 and view.rival_boot == "boot-a"
    assert view.rival_busy_at == 10.0
