"""Render results: a table for people, JSON for machines, a PNG of demand and capacity."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.sim.demand import Recording, concurrency_steps
from bench.sim.runner import ORACLE, PolicyResult, Scenario


def _oracle_hours(results: Sequence[PolicyResult]) -> float | None:
    return next((r.instance_hours for r in results if r.name == ORACLE), None)


def _wait(result: PolicyResult, grace: float) -> str:
    if math.isinf(result.p99_wait):
        return f"> {grace:g} s (missed)"
    return f"{result.p99_wait:.1f} s"


def table(results: Sequence[PolicyResult], grace: float) -> str:
    oracle_hours = _oracle_hours(results)
    header = (
        "policy",
        "missed",
        "% missed",
        "instance-h",
        "x oracle",
        "p99 wait",
        "busy terminations",
        "lost",
    )
    rows = [header]
    for r in results:
        ratio = f"{r.instance_hours / oracle_hours:.2f}" if oracle_hours else "-"
        share = 100.0 * r.missed / r.requests if r.requests else 0.0
        rows.append(
            (
                r.name,
                str(r.missed),
                f"{share:.2f}",
                f"{r.instance_hours:.1f}",
                ratio,
                _wait(r, grace),
                str(r.busy_terminations),
                str(r.lost),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        lines.append("  ".join(cells))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def as_json(scenario: Scenario, results: Sequence[PolicyResult], meta: dict[str, Any]) -> str:
    oracle_hours = _oracle_hours(results)
    spec = scenario.spec
    document = {
        "scenario": {
            **meta,
            "seed": scenario.seed,
            "hours": scenario.until / 3600.0,
            "recordings": sum(1 for r in scenario.recordings if r.start < scenario.until),
            "pool": {
                "targetFree": spec.targetFree,
                "capacity": {"min": spec.capacity.min, "max": spec.capacity.max},
                "scaleOutMaxStep": spec.scaleOut.maxStep,
                "scaleInIdleFor": spec.scaleIn.idleFor,
                "resync": spec.resync,
            },
            "world": vars(scenario.world),
            "initialInstances": scenario.initial,
        },
        "results": [
            {
                "policy": r.name,
                "label": r.label,
                "requests": r.requests,
                "missed": r.missed,
                "missedPercent": round(100.0 * r.missed / r.requests, 3) if r.requests else 0.0,
                "missedNearHourOrHalfHour": r.missed_near_boundary,
                "servedAfterWaiting": r.waited,
                "lost": r.lost,
                "busyTerminations": r.busy_terminations,
                "instanceHours": round(r.instance_hours, 2),
                "ratioToOracle": round(r.instance_hours / oracle_hours, 3)
                if oracle_hours
                else None,
                "p99WaitSeconds": None if math.isinf(r.p99_wait) else round(r.p99_wait, 2),
                "launches": r.launches,
                "rejectedCalls": r.rejected_calls,
                "wallSeconds": round(r.wall_seconds, 3),
                "extra": r.extra,
            }
            for r in results
        ],
    }
    return json.dumps(document, indent=2)


def _demand_samples(recordings: Sequence[Recording], until: float, period: float) -> list[int]:
    steps = concurrency_steps(recordings, until)
    samples, level, i, t = [], 0, 0, 0.0
    while t <= until:
        while i < len(steps) and steps[i][0] <= t:
            level = steps[i][1]
            i += 1
        samples.append(level)
        t += period
    return samples


def plot(scenario: Scenario, results: Sequence[PolicyResult], path: Path) -> None:
    """One panel per policy: recordings in progress (demand) against instances in the group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    period = scenario.world.sample_period
    demand = _demand_samples(scenario.recordings, scenario.until, period)
    hours = [i * period / 3600.0 for i in range(len(demand))]
    figure, axes = plt.subplots(
        len(results), 1, figsize=(12, 2.3 * len(results)), sharex=True, squeeze=False
    )
    oracle_hours = _oracle_hours(results)
    for axis, result in zip(axes[:, 0], results, strict=True):
        axis.fill_between(hours, demand, step="post", color="#d0d8e8", label="recordings wanted")
        if result.busy:
            axis.step(
                [t / 3600.0 for t, _ in result.busy],
                [b for _, b in result.busy],
                where="post",
                color="#2b7a3d",
                linewidth=0.8,
                label="recordings served",
            )
        axis.step(
            [t / 3600.0 for t, _ in result.capacity],
            [c for _, c in result.capacity],
            where="post",
            color="#c0392b",
            linewidth=1.0,
            label="instances",
        )
        ratio = f", {result.instance_hours / oracle_hours:.2f}x oracle" if oracle_hours else ""
        axis.set_title(
            f"{result.name}: {result.missed} missed of {result.requests}, "
            f"{result.instance_hours:.0f} instance-h{ratio}",
            fontsize=9,
            loc="left",
        )
        axis.set_ylabel("count")
        axis.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("hour of the simulated day")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
