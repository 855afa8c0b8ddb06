"""What happened during a sandbox run, and the verdict on it.

The ledger is written by the demand generator (served, missed, finished recordings), the fleet
supervisor (instance time, instances that left while recording) and the controller's log lines
(actions and their reasons). `Summary` is the machine-readable result of a run; it is unsafe
when a busy instance was terminated or a finished recording never reached the bucket.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any, Final

RECENT_ACTIONS: Final = 12


@dataclass
class RecordingEntry:
    session: str
    instance_id: str
    started_at: float
    """Seconds since the run began."""
    ended_at: float | None = None
    finalized: bool = False
    """Jibri's finalize ran and handed the recording to the agent's spool."""
    interrupted: bool = False
    """The instance left the group while this recording ran."""
    uploaded: bool = False


@dataclass(frozen=True)
class ActionEvent:
    at: float
    """Seconds since the run began."""
    pool: str
    action: str
    reason: str
    instance_ids: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class BusyTermination:
    at: float
    instance_id: str
    sessions: tuple[str, ...]
    lifecycle_state: str


@dataclass
class Ledger:
    recordings: dict[str, RecordingEntry] = field(default_factory=dict)
    requested: int = 0
    missed: int = 0
    busy_terminations: list[BusyTermination] = field(default_factory=list)
    instance_seconds: float = 0.0
    peak_instances: int = 0
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)
    recent_actions: deque[ActionEvent] = field(default_factory=lambda: deque(maxlen=RECENT_ACTIONS))
    finalize_failures: list[str] = field(default_factory=list)

    def begin(self) -> None:
        """The run proper starts: instance time counts from here."""
        self.instance_seconds = 0.0
        self.peak_instances = 0

    def request(self) -> None:
        self.requested += 1

    def miss(self) -> None:
        self.missed += 1

    def start(self, session: str, instance_id: str, at: float) -> None:
        self.recordings[session] = RecordingEntry(session, instance_id, at)

    def end(self, session: str, at: float, *, finalized: bool) -> None:
        entry = self.recordings.get(session)
        if entry is not None and entry.ended_at is None:
            entry.ended_at = at
            entry.finalized = finalized

    def interrupt(self, termination: BusyTermination) -> None:
        self.busy_terminations.append(termination)
        for session in termination.sessions:
            if (entry := self.recordings.get(session)) is not None:
                entry.interrupted = True

    def mark_uploaded(self, sessions: set[str]) -> None:
        for session in sessions:
            if (entry := self.recordings.get(session)) is not None:
                entry.uploaded = True

    def tick(self, instances: int, seconds: float) -> None:
        """Account `instances` running for `seconds`."""
        self.instance_seconds += instances * seconds
        self.peak_instances = max(self.peak_instances, instances)

    def action(self, event: ActionEvent) -> None:
        self.actions[(event.action, event.reason)] += 1
        self.recent_actions.append(event)

    @property
    def served(self) -> int:
        return len(self.recordings)

    @property
    def active(self) -> int:
        return sum(1 for r in self.recordings.values() if r.ended_at is None)

    @property
    def finished(self) -> list[RecordingEntry]:
        return [r for r in self.recordings.values() if r.finalized]

    @property
    def uploaded(self) -> int:
        return sum(1 for r in self.recordings.values() if r.uploaded)

    def not_uploaded(self) -> list[RecordingEntry]:
        return [r for r in self.finished if not r.uploaded]

    def count(self, action: str) -> int:
        return sum(n for (name, _), n in self.actions.items() if name == action)


@dataclass(frozen=True)
class Summary:
    duration_seconds: float
    recordings_requested: int
    recordings_served: int
    recordings_missed: int
    recordings_finished: int
    recordings_uploaded: int
    recordings_lost: int
    """Finished (handed to a spool) but not in the bucket after the settle period."""
    recordings_interrupted: int
    busy_instances_terminated: int
    instance_minutes: float
    peak_instances: int
    scale_outs: int
    scale_ins: int
    """Instances the controller terminated with a decrement after draining them."""
    actions_by_reason: dict[str, int]
    lost_sessions: list[str]
    busy_terminations: list[dict[str, Any]]
    finalize_failures: list[str]
    problems: list[str]
    """Anything else that makes the run fail (a child that died, a controller error)."""

    @property
    def unsafe(self) -> list[str]:
        reasons = []
        if self.busy_instances_terminated:
            reasons.append(f"{self.busy_instances_terminated} busy instance(s) terminated")
        if self.recordings_lost:
            reasons.append(f"{self.recordings_lost} finished recording(s) not in the bucket")
        if self.finalize_failures:
            reasons.append(f"{len(self.finalize_failures)} recording(s) failed to finalize")
        return reasons + list(self.problems)

    @property
    def ok(self) -> bool:
        return not self.unsafe

    def to_json(self) -> str:
        document = asdict(self)
        document["ok"] = self.ok
        document["unsafe"] = self.unsafe
        return json.dumps(document, indent=2, sort_keys=True)


def summarize(ledger: Ledger, duration: float, problems: list[str]) -> Summary:
    lost = ledger.not_uploaded()
    return Summary(
        duration_seconds=round(duration, 1),
        recordings_requested=ledger.requested,
        recordings_served=ledger.served,
        recordings_missed=ledger.missed,
        recordings_finished=len(ledger.finished),
        recordings_uploaded=ledger.uploaded,
        recordings_lost=len(lost),
        recordings_interrupted=sum(1 for r in ledger.recordings.values() if r.interrupted),
        busy_instances_terminated=len(ledger.busy_terminations),
        instance_minutes=round(ledger.instance_seconds / 60.0, 2),
        peak_instances=ledger.peak_instances,
        scale_outs=ledger.count("scale-out"),
        scale_ins=ledger.count("terminate"),
        actions_by_reason={
            f"{action}/{reason}": n for (action, reason), n in sorted(ledger.actions.items())
        },
        lost_sessions=sorted(r.session for r in lost),
        busy_terminations=[asdict(t) for t in ledger.busy_terminations],
        finalize_failures=list(ledger.finalize_failures),
        problems=list(problems),
    )


def render_summary(summary: Summary) -> str:
    """The plain-text summary printed at the end of a run."""
    width = max(len(k) for k in summary.actions_by_reason) if summary.actions_by_reason else 0
    lines = [
        f"sandbox summary ({summary.duration_seconds:.0f} s)",
        f"  recordings requested      {summary.recordings_requested}",
        f"  recordings served         {summary.recordings_served}",
        f"  recordings missed         {summary.recordings_missed}  (no idle Jibri)",
        f"  recordings finished       {summary.recordings_finished}",
        f"  recordings in the bucket  {summary.recordings_uploaded}",
        f"  recordings lost           {summary.recordings_lost}",
        f"  busy instances terminated {summary.busy_instances_terminated}",
        f"  instance-minutes          {summary.instance_minutes:.1f}",
        f"  peak instances            {summary.peak_instances}",
        f"  scale-outs / scale-ins    {summary.scale_outs} / {summary.scale_ins}",
        "  actions by reason:",
    ]
    if summary.actions_by_reason:
        lines += [f"    {key.ljust(width)}  {n}" for key, n in summary.actions_by_reason.items()]
    else:
        lines.append("    (none)")
    if summary.ok:
        lines.append("result: OK (no busy instance terminated, every recording in the bucket)")
    else:
        lines.append("result: UNSAFE")
        lines += [f"  - {reason}" for reason in summary.unsafe]
        lines += [f"    lost: {session}" for session in summary.lost_sessions[:10]]
    return "\n".join(lines)
