"""Pool metrics for CloudWatch: what to publish after a pass, and how to cut it into requests
that AWS accepts (moto enforces none of these limits, so they are enforced here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from controller.model import InstanceState
from controller.spec import cloudwatch as cw_names

MAX_DATA_PER_REQUEST: Final = 1000
MAX_REQUEST_BYTES: Final = 1_000_000
MAX_ABS_VALUE: Final = 2.0**360
"""CloudWatch rejects values beyond ±2^360, and NaN or infinities."""

# The pool gauge each state adds to. Stale instances count as busy: docs/design.md §4 treats
# their silence as busy, and they stay protected for the same reason.
_GAUGES: Final[Mapping[str, frozenset[InstanceState]]] = {
    cw_names.FREE: frozenset({InstanceState.IDLE, InstanceState.STARTING}),
    cw_names.BUSY: frozenset({InstanceState.BUSY, InstanceState.STALE, InstanceState.CONFLICTED}),
    cw_names.STARTING: frozenset({InstanceState.STARTING}),
    cw_names.DRAINING: frozenset({InstanceState.DRAINING}),
}


@dataclass(frozen=True)
class Datum:
    """One value of one metric, as PutMetricData takes it."""

    metric_name: str
    value: float
    dimensions: tuple[tuple[str, str], ...]
    timestamp: float
    """Unix time."""
    unit: str = "Count"
    storage_resolution: int = 60


def pool_data(
    counts: Mapping[InstanceState, int],
    group: str,
    *,
    now: float,
    storage_resolution: int,
) -> tuple[Datum, ...]:
    """The pool gauges for one pass, or nothing while any instance is still `unknown`: right
    after a start the counts are guesses, and a guessed FreeInstances of 0 could trip an alarm.
    """
    if counts.get(InstanceState.UNKNOWN, 0):
        return ()
    dimensions = ((cw_names.DIMENSION, group),)
    return tuple(
        Datum(
            metric_name=name,
            value=float(sum(counts.get(state, 0) for state in states)),
            dimensions=dimensions,
            timestamp=now,
            storage_resolution=storage_resolution,
        )
        for name, states in _GAUGES.items()
    )


def datum_problem(datum: Datum) -> str | None:
    """Why CloudWatch would refuse this datum (and with it the whole request), or None."""
    if not math.isfinite(datum.value):
        return f"{datum.metric_name}: value {datum.value} is not a finite number"
    if abs(datum.value) > MAX_ABS_VALUE:
        return f"{datum.metric_name}: value {datum.value:g} is beyond ±2^360"
    if len(datum.dimensions) > 30:
        return f"{datum.metric_name}: {len(datum.dimensions)} dimensions (at most 30)"
    if datum.storage_resolution not in (1, 60):
        return f"{datum.metric_name}: storage resolution {datum.storage_resolution} (1 or 60)"
    return None


def _field(key: str, value: str) -> int:
    return len(quote(key, safe="")) + len(quote(value, safe="")) + 2  # '=' and '&'


def encoded_size(datum: Datum, index: int = MAX_DATA_PER_REQUEST) -> int:
    """Bytes the datum takes in a form-encoded (query protocol) request body.

    That protocol is the most verbose one botocore may choose for CloudWatch, so the size is
    an upper bound whatever the client negotiates. `index` is its 1-based member number.
    """
    member = f"MetricData.member.{index}."
    size = _field(member + "MetricName", datum.metric_name)
    size += _field(member + "Value", repr(datum.value))
    size += _field(member + "Timestamp", "2000-01-01T00:00:00.000000Z")
    size += _field(member + "Unit", datum.unit)
    size += _field(member + "StorageResolution", str(datum.storage_resolution))
    for number, (name, value) in enumerate(datum.dimensions, start=1):
        size += _field(f"{member}Dimensions.member.{number}.Name", name)
        size += _field(f"{member}Dimensions.member.{number}.Value", value)
    return size


def request_overhead(namespace: str) -> int:
    return (
        _field("Action", "PutMetricData")
        + _field("Version", "2010-08-01")
        + _field("Namespace", namespace)
    )


def batches(
    namespace: str,
    data: Iterable[Datum],
    *,
    max_data: int = MAX_DATA_PER_REQUEST,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> list[tuple[Datum, ...]]:
    """Cut `data` into requests of at most `max_data` data and `max_bytes` bytes, in order.

    Raises ValueError for a datum CloudWatch would refuse, or one too large for any request:
    one bad value must not silently cost the request that carries it.
    """
    requests: list[tuple[Datum, ...]] = []
    current: list[Datum] = []
    overhead = request_overhead(namespace)
    size = overhead
    for datum in data:
        if problem := datum_problem(datum):
            raise ValueError(problem)
        # Sizing every member at the largest index keeps the bound valid wherever it lands.
        need = encoded_size(datum, max_data)
        if overhead + need > max_bytes:
            raise ValueError(f"{datum.metric_name}: {need} bytes do not fit in one request")
        if current and (len(current) >= max_data or size + need > max_bytes):
            requests.append(tuple(current))
            current, size = [], overhead
        current.append(datum)
        size += need
    if current:
        requests.append(tuple(current))
    return requests
