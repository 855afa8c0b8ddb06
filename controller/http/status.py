"""What `/status` and `/healthz` say (docs/design.md), and the table `controller status` prints.

Both read each pool's `PoolSnapshot`, the frozen record its last pass left, the per-pool
blocks of the controller's status sources (the CloudWatch step's `cloudWatch`), and the
pool's demand (`readiness`: the target in force and its parts, docs/readiness.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from controller.demand.service import DAY, HOUR, MissRate, PoolDemand
from controller.loop import PoolSnapshot, StatusSource
from controller.model import Condition, InstanceState
from controller.pools import Controller
from controller.readiness.forecast import ReadinessTarget
from controller.spec import PoolSpec

HEALTHY_RESYNCS = 3
"""/healthz fails for a pool without a successful pass within this many resync periods."""


def pool_health(snapshot: PoolSnapshot, now: float) -> tuple[bool, str]:
    """Whether the pool reconciled recently enough, and why not if it did not."""
    limit = HEALTHY_RESYNCS * snapshot.pool.spec.resync
    last = snapshot.last_success_at
    age = now - (last if last is not None else snapshot.added_at)
    if age <= limit:
        return True, "ok"
    what = "last successful reconcile" if last is not None else "start"
    error = f": {snapshot.last_error}" if snapshot.last_error else ""
    return False, f"{what} {age:.1f}s ago, more than {limit:g}s{error}"


def health(controller: Controller, now: float) -> tuple[bool, dict[str, Any]]:
    pools = {}
    for name, runner in controller.pools.items():
        ok, message = pool_health(runner.snapshot, now)
        pools[name] = {"ok": ok, "message": message}
    ok = all(p["ok"] for p in pools.values())
    return ok, {"ok": ok, "pools": pools}


def _condition(condition: Condition) -> dict[str, str]:
    return {
        "type": condition.type,
        "status": "True" if condition.status else "False",
        "reason": condition.reason,
        "message": condition.message,
    }


def _runtime_conditions(snapshot: PoolSnapshot, now: float) -> list[dict[str, str]]:
    if snapshot.last_error is not None:
        reconciled = {
            "type": "Reconciled",
            "status": "False",
            "reason": "ReconcileFailing",
            "message": f"{snapshot.failures} failed pass(es) in a row "
            f"({snapshot.last_error_kind}): {snapshot.last_error}",
        }
    elif snapshot.last_success_at is not None:
        reconciled = {
            "type": "Reconciled",
            "status": "True",
            "reason": "ReconcileSucceeded",
            "message": f"last pass {now - snapshot.last_success_at:.1f}s ago",
        }
    else:
        reconciled = {
            "type": "Reconciled",
            "status": "Unknown",
            "reason": "Pending",
            "message": "no pass has completed yet",
        }
    conditions = [reconciled]
    if snapshot.step_errors:
        conditions.append(
            {
                "type": "ExtraStepsSucceeded",
                "status": "False",
                "reason": "StepFailing",
                "message": "; ".join(f"{k}: {v}" for k, v in sorted(snapshot.step_errors.items())),
            }
        )
    return conditions


def _target(target: ReadinessTarget) -> dict[str, Any]:
    return {
        "total": target.total,
        "floor": target.floor,
        "schedule": {"rule": target.schedule_rule, "override": target.override},
        "forecast": target.forecast,
        "reactive": target.reactive,
        "later": target.later,
        "keep": target.keep,
        "drainEarly": target.drain_early,
        "horizonSeconds": round(target.horizon, 3),
        "expected": round(target.expected, 3),
        "ending": round(target.ending, 3),
        "surprise": round(target.surprise, 3),
        "samples": target.samples,
    }


def _misses(rate: MissRate) -> dict[str, Any]:
    return {
        "started": rate.started,
        "missed": rate.missed,
        "rate": None if rate.rate is None else round(rate.rate, 6),
    }


def readiness_status(
    spec: PoolSpec, target: ReadinessTarget | None, demand: PoolDemand, wall_time: float
) -> dict[str, Any]:
    """The target in force and its parts, the override in force, the boot horizon, the
    demand history held, and the miss rate (missed ÷ requests) over the last hour and day."""
    override = None
    if target is not None and target.override is not None:
        entry = spec.schedule.overrides[target.override]
        override = {
            "index": target.override,
            "from": entry.start.isoformat(timespec="minutes"),
            "to": entry.end.isoformat(timespec="minutes"),
            "timezone": spec.schedule.timezone,
            "targetFree": entry.targetFree,
        }
    readiness, sync = demand.readiness, demand.sync
    return {
        "enabled": spec.readiness.enabled,
        "target": None if target is None else _target(target),
        "override": override,
        "bootHorizonSeconds": round(readiness.horizon(spec), 3),
        "bootsMeasured": len(readiness.boots.durations),
        "history": {
            "minutes": len(readiness.history),
            "cloudWatch": sync is not None,
            "backfilled": sync is not None and sync.backfilled,
            "dropped": 0 if sync is None else sync.dropped,
        },
        "missed": {
            "lastHour": _misses(demand.misses(wall_time, HOUR)),
            "lastDay": _misses(demand.misses(wall_time, DAY)),
        },
        "jicofo": None
        if spec.demand.jicofo is None
        else {"available": demand.jicofo_available, "errors": dict(demand.jicofo_errors)},
    }


def pool_status(
    snapshot: PoolSnapshot,
    now: float,
    sources: Sequence[StatusSource] = (),
    *,
    demand: PoolDemand | None = None,
    wall_time: float | None = None,
) -> dict[str, Any]:
    observed, plan = snapshot.observed, snapshot.plan
    instances = []
    counts = dict.fromkeys((s.value for s in InstanceState), 0)
    if plan is not None:
        reports = observed.reports if observed is not None else {}
        for view in plan.instances:
            report = reports.get(view.instance_id)
            counts[view.state.value] += 1
            instances.append(
                {
                    "instanceId": view.instance_id,
                    "state": view.state.value,
                    "protected": view.protected,
                    "lastReportAgeSeconds": None
                    if report is None
                    else round(max(0.0, now - report.received_at), 3),
                    "drainRequested": view.instance_id in snapshot.drain_requested,
                    "detail": view.detail,
                }
            )
    spec = snapshot.pool.spec
    group: dict[str, Any] = {"name": spec.autoScalingGroupName}
    if observed is not None:
        asg = observed.asg
        group.update(desired=asg.desired, min=asg.min_size, max=asg.max_size)
    document: dict[str, Any] = {
        "name": snapshot.name,
        "spec": spec.model_dump(mode="json"),
        "autoScalingGroup": group,
        "plannedCapacity": plan.desired_capacity if plan is not None else None,
        "targetFree": plan.target_free if plan is not None else spec.targetFree,
        "counts": counts,
        "instances": instances,
        "conditions": _runtime_conditions(snapshot, now)
        + [_condition(c) for c in (plan.conditions if plan is not None else ())],
        "lastReconcileAgeSeconds": None
        if snapshot.last_success_at is None
        else round(now - snapshot.last_success_at, 3),
        "consecutiveFailures": snapshot.failures,
        # Managed alarms with their state as last read, the fallback policy, publishing.
        "cloudWatch": None,
        "readiness": None
        if demand is None or wall_time is None
        else readiness_status(
            spec, observed.readiness if observed is not None else None, demand, wall_time
        ),
    }
    for source in sources:
        document[source.status_key] = source.pool_status(snapshot.name)
    return document


def status(controller: Controller, now: float, *, dry_run: bool) -> dict[str, Any]:
    sources, wall = controller.status_sources, controller.wall_clock()
    return {
        "dryRun": dry_run,
        "uptimeSeconds": round(now - controller.started_at, 3),
        "source": controller.state.source,
        "pools": [
            pool_status(r.snapshot, now, sources, demand=r.demand, wall_time=wall)
            for r in controller.pools.values()
        ],
    }


# --- text rendering for `python -m controller status` --------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain-text table with left-aligned, padded columns."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


_SHOWN_STATES = ("idle", "starting", "busy", "draining", "stale", "unknown")


def render(document: Mapping[str, Any]) -> str:
    """The /status document as tables: pools, then conditions and instances per pool."""
    pools = document.get("pools", [])
    out = [
        table(
            [
                "POOL",
                "GROUP",
                "DESIRED",
                "MIN",
                "MAX",
                "TARGET-FREE",
                *(s.upper() for s in _SHOWN_STATES),
                "OTHER",
            ],
            [_pool_row(p) for p in pools],
        )
    ]
    for pool in pools:
        out.append("")
        out.append(f"{pool['name']}: conditions")
        out.append(
            table(
                ["TYPE", "STATUS", "REASON", "MESSAGE"],
                [[c["type"], c["status"], c["reason"], c["message"]] for c in pool["conditions"]],
            )
        )
        if pool["instances"]:
            out.append("")
            out.append(f"{pool['name']}: instances")
            out.append(
                table(
                    ["INSTANCE", "STATE", "PROTECTED", "REPORT-AGE", "DRAIN", "DETAIL"],
                    [_instance_row(i) for i in pool["instances"]],
                )
            )
        readiness = pool.get("readiness")
        if readiness is not None:
            out.append("")
            out.append(f"{pool['name']}: readiness")
            out.append(_readiness_table(readiness))
        alarms = (pool.get("cloudWatch") or {}).get("alarms") or []
        if alarms:
            out.append("")
            out.append(f"{pool['name']}: alarms")
            out.append(
                table(
                    ["ALARM", "ROLE", "STATE", "SINCE", "CORRECTED"],
                    [
                        [a["name"], a["role"], a["state"], a["updatedAt"], ",".join(a["corrected"])]
                        for a in alarms
                    ],
                )
            )
    if document.get("dryRun"):
        out.append("")
        out.append("dry-run: actions are planned and logged, not carried out")
    return "\n".join(out)


def _rate(block: Mapping[str, Any]) -> str:
    rate = block.get("rate")
    text = "-" if rate is None else f"{100 * rate:.2f}%"
    return (
        f"{text} ({block.get('missed', 0):g}/{block.get('started', 0) + block.get('missed', 0):g})"
    )


def _readiness_table(readiness: Mapping[str, Any]) -> str:
    """The target in force with its parts, the horizon and the miss rates, as one row."""
    target = readiness.get("target") or {}
    override = readiness.get("override")
    schedule = target.get("schedule") or {}
    if override is not None:
        source = f"override {override['from']}..{override['to']}"
    elif schedule.get("rule") is not None:
        source = f"rule {schedule['rule']}"
    else:
        source = "targetFree"
    missed = readiness.get("missed") or {}
    headers = ["TARGET", "FLOOR", "FROM", "FORECAST", "REACTIVE", "LATER", "HORIZON"]
    return table(
        [*headers, "HISTORY-MIN", "MISSED-1H", "MISSED-1D"],
        [
            [
                target.get("total"),
                target.get("floor"),
                source,
                target.get("forecast"),
                target.get("reactive"),
                target.get("later"),
                f"{readiness.get('bootHorizonSeconds', 0):g}s",
                (readiness.get("history") or {}).get("minutes"),
                _rate(missed.get("lastHour") or {}),
                _rate(missed.get("lastDay") or {}),
            ]
        ],
    )


def _pool_row(pool: Mapping[str, Any]) -> list[object]:
    group, spec, counts = pool["autoScalingGroup"], pool["spec"], pool["counts"]
    other = sum(n for s, n in counts.items() if s not in _SHOWN_STATES)
    return [
        pool["name"],
        group["name"],
        group.get("desired"),
        group.get("min"),
        group.get("max"),
        pool.get("targetFree", spec["targetFree"]),
        *(counts.get(s, 0) for s in _SHOWN_STATES),
        other,
    ]


def _instance_row(instance: Mapping[str, Any]) -> list[object]:
    age = instance["lastReportAgeSeconds"]
    return [
        instance["instanceId"],
        instance["state"],
        "yes" if instance["protected"] else "no",
        None if age is None else f"{age:.1f}s",
        "yes" if instance["drainRequested"] else "no",
        instance["detail"],
    ]
