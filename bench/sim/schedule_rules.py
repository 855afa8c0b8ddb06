"""Turn a day's profile of targets (one per window) into a short list of schedule rules.

Rules are cron-like (hours x minutes), so a rule never spans an hour boundary unless it
covers whole hours. Within each hour the windows are cut into runs, each run holding its
largest target; cutting finer keeps fewer spares but takes more rules, so the cut minimises
spare-minutes held beyond the profile plus a price per rule (dynamic programming over the
hour's windows), with the price searched for the smallest one that fits the rule budget. Runs
with the same minutes and target in different hours then share one rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from controller.spec import ScheduleRule

MIN_RULE_BUDGET = 24
"""One run per hour always fits: a rule budget below this cannot be met."""


def _ranges(values: Iterable[int]) -> str:
    """Sorted integers as a cron field: `9-11,14`."""
    ordered = sorted(set(values))
    parts: list[str] = []
    first = previous = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(first) if first == previous else f"{first}-{previous}")
        if value is not None:
            first = previous = value
    return ",".join(parts)


def _per_hour(targets: Sequence[int], window: int) -> int:
    if window <= 0 or window % 60 or 3600 % window:
        raise ValueError(f"a window must be whole minutes dividing an hour, got {window} s")
    per_hour = 3600 // window
    if len(targets) != 24 * per_hour:
        raise ValueError(f"expected {24 * per_hour} window targets, got {len(targets)}")
    return per_hour


def merge_rules(
    targets: Sequence[int], *, base: int, window: int, days: str = "*"
) -> tuple[ScheduleRule, ...]:
    """Rules for per-window targets over a day (window seconds each, from 00:00): one per
    run of equal targets within an hour, the same run in different hours sharing a rule;
    windows at or below `base` (spec.targetFree) need none."""
    per_hour = _per_hour(targets, window)
    minutes = window // 60
    hours_of: dict[tuple[int, int, int], list[int]] = {}
    for hour in range(24):
        row = targets[hour * per_hour : (hour + 1) * per_hour]
        k = 0
        while k < per_hour:
            end = k
            while end + 1 < per_hour and row[end + 1] == row[k]:
                end += 1
            if row[k] > base:
                key = (k * minutes, (end + 1) * minutes - 1, row[k])
                hours_of.setdefault(key, []).append(hour)
            k = end + 1
    ordered = sorted(hours_of.items(), key=lambda item: (item[1][0], item[0][0], item[0][2]))
    return tuple(
        ScheduleRule(
            days=days,
            hours="*" if len(hours) == 24 else _ranges(hours),
            minutes="*" if (first, last) == (0, 59) else f"{first}-{last}",
            targetFree=target,
        )
        for (first, last, target), hours in ordered
    )


def _cut(row: Sequence[int], base: int, price: float) -> list[int]:
    """One hour's windows cut into runs at the least spare-windows + price per rule; each
    window gets its run's largest target (runs at or below `base` need no rule, so no price)."""
    levels = [max(base, t) for t in row]
    size = len(levels)
    best = [0.0] + [float("inf")] * size
    start_of = [0] * (size + 1)
    for end in range(1, size + 1):
        top = total = 0
        for start in range(end - 1, -1, -1):
            top = max(top, levels[start])
            total += levels[start]
            cost = best[start] + top * (end - start) - total + (price if top > base else 0.0)
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    out = [0] * size
    end = size
    while end > 0:
        start = start_of[end]
        out[start:end] = [max(levels[start:end])] * (end - start)
        end = start
    return out


def fit_rules(
    targets: Sequence[int], *, base: int, window: int, budget: int, days: str = "*"
) -> tuple[ScheduleRule, ...]:
    """At most `budget` rules that keep every window's target or more, holding as few extra
    spare-windows as the budget allows."""
    if budget < MIN_RULE_BUDGET:
        raise ValueError(f"a rule budget below {MIN_RULE_BUDGET} (one per hour) cannot be met")
    per_hour = _per_hour(targets, window)
    rows = [targets[h * per_hour : (h + 1) * per_hour] for h in range(24)]

    def rules_at(price: float) -> tuple[ScheduleRule, ...]:
        cut = [level for row in rows for level in _cut(row, base, price)]
        return merge_rules(cut, base=base, window=window, days=days)

    exact = merge_rules(targets, base=base, window=window, days=days)
    if len(exact) <= budget:
        return exact
    # Above an hour's worth of the largest target, a rule never pays: one run per hour.
    low, high = 0.0, float(max(targets) * per_hour + 1)
    fitted = rules_at(high)
    for _ in range(40):
        price = (low + high) / 2
        candidate = rules_at(price)
        if len(candidate) <= budget:
            high, fitted = price, candidate
        else:
            low = price
        if high - low < 0.5:
            break
    return fitted
