"""The live terminal view: what the controller says (/status) beside what the sandbox sees.

`render(snapshot)` is pure: the runner builds a `Snapshot` about once a second and rich's Live
redraws it, so the whole screen can be tested by rendering one snapshot to a recording console.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sandbox.ledger import ActionEvent

STATE_STYLES: Final = {
    "idle": "green",
    "starting": "cyan",
    "busy": "bold yellow",
    "draining": "magenta",
    "drained": "magenta",
    "stale": "red",
    "unknown": "dim",
    "unhealthy": "red",
    "failed-boot": "red",
    "expired": "red",
    "terminating": "dim",
    "standby": "dim",
}
NEGATIVE_CONDITIONS: Final = frozenset({"Degraded"})
"""Conditions that are good when False."""
SHOWN_COUNTS: Final = ("idle", "starting", "busy", "draining", "stale", "unknown")


@dataclass(frozen=True)
class SimInstance:
    """The sandbox's side of one instance: its simulated VM, Jibri and agent."""

    instance_id: str
    phase: str
    """booting, running, stopped."""
    jibri: str
    """idle, busy, shut down, or - while booting."""
    recordings: int = 0


@dataclass(frozen=True)
class Snapshot:
    elapsed: float
    duration: float | None
    phase: str
    controller_url: str
    demand: str
    requested: int = 0
    served: int = 0
    missed: int = 0
    active: int = 0
    finished: int = 0
    uploaded: int = 0
    busy_terminated: int = 0
    instance_minutes: float = 0.0
    sims: tuple[SimInstance, ...] = ()
    actions: tuple[ActionEvent, ...] = ()
    status: Mapping[str, Any] | None = None
    status_error: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def _clock(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _styled(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _header(s: Snapshot) -> RenderableType:
    until = f" / {_clock(s.duration)}" if s.duration is not None else ""
    title = Text.assemble(
        ("jibri-autoscaler sandbox", "bold"),
        f"   {_clock(s.elapsed)}{until}   ",
        (s.phase, "bold cyan"),
        "   Ctrl-C to stop" if s.duration is None else "",
    )
    url = s.controller_url.rstrip("/")
    links = Text.assemble(
        "controller ",
        (url, "underline"),
        "   status ",
        (f"{url}/status", "underline"),
        "   metrics ",
        (f"{url}/metrics", "underline"),
    )
    return Group(title, links, Text(f"demand: {s.demand}", style="dim"))


def _pool_panel(pool: Mapping[str, Any], sims: Mapping[str, SimInstance]) -> RenderableType:
    group = pool.get("autoScalingGroup", {})
    spec = pool.get("spec", {})
    counts: Mapping[str, int] = pool.get("counts", {})
    capacity = spec.get("capacity", {})
    line = Text.assemble(
        ("desired ", "dim"),
        (str(group.get("desired", "-")), "bold"),
        ("   min ", "dim"),
        str(group.get("min", capacity.get("min", "-"))),
        ("   max ", "dim"),
        str(group.get("max", capacity.get("max", "-"))),
        ("   target free ", "dim"),
        str(spec.get("targetFree", "-")),
    )
    by_state = Text()
    for state in SHOWN_COUNTS:
        by_state.append(f"{state} ", style="dim")
        by_state.append(str(counts.get(state, 0)), style=STATE_STYLES[state])
        by_state.append("   ")
    others = {k: v for k, v in counts.items() if k not in SHOWN_COUNTS and v}
    for state, n in sorted(others.items()):
        by_state.append(f"{state} ", style="dim")
        by_state.append(str(n), style=STATE_STYLES.get(state, ""))
        by_state.append("   ")

    table = Table(expand=True, box=None, pad_edge=False)
    for header in ("instance", "state", "protected", "report age", "jibri (sim)", "served"):
        table.add_column(header, no_wrap=True)
    for instance in pool.get("instances", []):
        iid = instance.get("instanceId", "?")
        age = instance.get("lastReportAgeSeconds")
        sim = sims.get(iid)
        table.add_row(
            iid,
            _styled(str(instance.get("state", "?"))),
            "yes" if instance.get("protected") else "",
            "-" if age is None else f"{age:.1f}s",
            "-" if sim is None else (sim.jibri if sim.phase == "running" else sim.phase),
            "" if sim is None else str(sim.recordings),
        )
    parts: list[RenderableType] = [line]
    readiness = pool.get("readiness")
    if readiness and readiness.get("target"):
        parts.append(_readiness(readiness))
    parts += [by_state, table]
    parts += [_condition(c) for c in pool.get("conditions", [])]
    title = f"pool {pool.get('name', '?')} (ASG {group.get('name', '?')})"
    return Panel(Group(*parts), title=title, title_align="left")


def _readiness(readiness: Mapping[str, Any]) -> Text:
    """The target in force and its parts (docs/readiness.md), the horizon and the miss rate."""
    target: Mapping[str, Any] = readiness["target"]
    override = readiness.get("override")
    rule = (target.get("schedule") or {}).get("rule")
    if override is not None:
        floor_from = f" (override until {override.get('to', '?')})"
    elif rule is not None:
        floor_from = f" (schedule rule {rule})"
    else:
        floor_from = ""
    hour = (readiness.get("missed") or {}).get("lastHour") or {}
    asked = hour.get("started", 0) + hour.get("missed", 0)
    rate = hour.get("rate")
    return Text.assemble(
        ("target in force ", "dim"),
        (str(target.get("total", "-")), "bold"),
        ("   floor ", "dim"),
        f"{target.get('floor', '-')}{floor_from}",
        ("   forecast ", "dim"),
        str(target.get("forecast", "-")),
        ("   reactive ", "dim"),
        str(target.get("reactive", "-")),
        ("   later ", "dim"),
        str(target.get("later", "-")),
        ("   horizon ", "dim"),
        f"{readiness.get('bootHorizonSeconds', 0):g}s",
        ("   history ", "dim"),
        f"{(readiness.get('history') or {}).get('minutes', 0)} min",
        ("   missed 1h ", "dim"),
        f"{'-' if rate is None else f'{100 * rate:.1f}%'} ({hour.get('missed', 0):g}/{asked:g})",
    )


def _condition(condition: Mapping[str, Any]) -> Text:
    kind, status = str(condition.get("type", "?")), str(condition.get("status", "?"))
    if kind in NEGATIVE_CONDITIONS:
        style = {"True": "red", "False": "green"}.get(status, "yellow")
    else:
        style = {"True": "green", "False": "yellow"}.get(status, "yellow")
    if kind == "Reconciled" and status == "False":
        style = "red"
    return Text.assemble(
        (f"{kind} {status}", style),
        (f"  {condition.get('reason', '')}: {condition.get('message', '')}", "dim"),
    )


def _actions_panel(actions: Sequence[ActionEvent]) -> RenderableType:
    table = Table(expand=True, box=None, pad_edge=False)
    for header in ("at", "action", "reason", "instances"):
        table.add_column(header, no_wrap=True)
    for a in reversed(actions):
        ids = ", ".join(a.instance_ids[:3]) + (" …" if len(a.instance_ids) > 3 else "")
        table.add_row(_clock(a.at), a.action, a.reason, ids or a.detail)
    if not actions:
        table.add_row("", Text("none yet", style="dim"), "", "")
    return Panel(table, title="last actions (newest first)", title_align="left")


def _recordings_panel(s: Snapshot) -> RenderableType:
    text = Text.assemble(
        ("served ", "dim"),
        (str(s.served), "bold green"),
        ("   missed ", "dim"),
        (str(s.missed), "bold red" if s.missed else "bold"),
        ("   recording now ", "dim"),
        str(s.active),
        ("   finished ", "dim"),
        str(s.finished),
        ("   in the bucket ", "dim"),
        str(s.uploaded),
        ("   busy instances terminated ", "dim"),
        (str(s.busy_terminated), "bold red" if s.busy_terminated else "bold green"),
        ("   instance-minutes ", "dim"),
        f"{s.instance_minutes:.1f}",
    )
    return Panel(text, title="recordings", title_align="left")


def render(s: Snapshot) -> RenderableType:
    """The whole screen for one snapshot."""
    parts: list[RenderableType] = [_header(s)]
    sims = {sim.instance_id: sim for sim in s.sims}
    if s.status is not None:
        parts += [_pool_panel(pool, sims) for pool in s.status.get("pools", [])]
    else:
        waiting = s.status_error or "waiting for the controller"
        parts.append(Panel(Text(waiting, style="yellow"), title="pools", title_align="left"))
    parts.append(_actions_panel(s.actions))
    parts.append(_recordings_panel(s))
    parts += [Text(note, style="yellow") for note in s.notes]
    return Group(*parts)
