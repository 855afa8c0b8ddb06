"""Render results: a table for people, JSON for machines, a PNG of demand and capacity."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.sim.demand import Recording, concurrency_steps
from bench.sim.runner import ORACLE, DayResult, PolicyResult, Scenario


def _oracle_hours(results: Sequence[PolicyResult]) -> float | None:
    return next((r.instance_hours for r in results if r.name == ORACLE), None)


def cost_hours(instance_hours: float, warm_hours: float, warm_cost: float) -> float:
    """Running instance-hours plus stopped warmed hours at their price (a share of running)."""
    return instance_hours + warm_cost * warm_hours


def _ratio(cost: float, oracle: float | None) -> float | None:
    return round(cost / oracle, 3) if oracle else None


def _day_rows(
    scenario: Scenario, result: PolicyResult, oracle: PolicyResult | None
) -> list[dict[str, Any]]:
    warm_cost = scenario.world.warm_cost
    rows = []
    for k, day in enumerate(result.days):
        cost = cost_hours(day.instance_hours, day.warm_hours, warm_cost)
        base = oracle.days[k].instance_hours if oracle and k < len(oracle.days) else None
        rows.append(
            {
                "day": k + 1,
                "label": scenario.day_labels[k] if k < len(scenario.day_labels) else "",
                "requests": day.requests,
                "missed": day.missed,
                "missedPercent": round(100.0 * day.missed / day.requests, 3)
                if day.requests
                else 0.0,
                "instanceHours": round(day.instance_hours, 2),
                "warmPoolHours": round(day.warm_hours, 2),
                "costHours": round(cost, 2),
                "ratioToOracle": _ratio(cost, base),
                "lost": day.lost,
                "busyTerminations": day.busy_terminations,
            }
        )
    return rows


def day_table(scenario: Scenario, results: Sequence[PolicyResult]) -> str:
    """Per simulated day: each policy's misses and cost against the oracle's."""
    oracle = next((r for r in results if r.name == ORACLE), None)
    policies = [r for r in results if r.name != ORACLE]
    header = ("day", *(r.name for r in policies))
    rows: list[tuple[str, ...]] = [header]
    for k in range(len(results[0].days)):
        label = scenario.day_labels[k] if k < len(scenario.day_labels) else f"day {k + 1}"
        cells = [label]
        for r in policies:
            day: DayResult = r.days[k]
            cost = cost_hours(day.instance_hours, day.warm_hours, scenario.world.warm_cost)
            base = oracle.days[k].instance_hours if oracle else 0.0
            ratio = f" {cost / base:.2f}x" if base else ""
            cells.append(f"{day.missed}/{day.requests}{ratio}")
        rows.append(tuple(cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["missed/requests and cost x oracle, per day"]
    for number, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _wait(result: PolicyResult, grace: float) -> str:
    if math.isinf(result.p99_wait):
        return f"> {grace:g} s (missed)"
    return f"{result.p99_wait:.1f} s"


def table(results: Sequence[PolicyResult], grace: float, warm_cost: float = 0.0) -> str:
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
        cost = cost_hours(r.instance_hours, r.warm_hours, warm_cost)
        ratio = f"{cost / oracle_hours:.2f}" if oracle_hours else "-"
        share = 100.0 * r.missed / r.requests if r.requests else 0.0
        rows.append(
            (
                r.name,
                str(r.missed),
                f"{share:.2f}",
                f"{r.instance_hours:.1f}"
                + (f" +{warm_cost * r.warm_hours:.1f}w" if r.warm_hours else ""),
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
    oracle = next((r for r in results if r.name == ORACLE), None)
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
            "days": list(scenario.day_labels),
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
                "warmPoolHours": round(r.warm_hours, 2),
                "costHours": round(
                    cost_hours(r.instance_hours, r.warm_hours, scenario.world.warm_cost), 2
                ),
                "ratioToOracle": _ratio(
                    cost_hours(r.instance_hours, r.warm_hours, scenario.world.warm_cost),
                    oracle_hours,
                ),
                "p99WaitSeconds": None if math.isinf(r.p99_wait) else round(r.p99_wait, 2),
                "launches": r.launches,
                "rejectedCalls": r.rejected_calls,
                "wallSeconds": round(r.wall_seconds, 3),
                "extra": r.extra,
                "days": _day_rows(scenario, r, oracle),
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
