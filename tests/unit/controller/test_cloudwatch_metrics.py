"""Pool metrics: the gauges derived from a plan's counts, and requests cut to AWS's limits."""

from __future__ import annotations

import math
from urllib.parse import urlencode

import pytest
from botocore.model import ServiceModel
from botocore.serialize import QuerySerializer
from botocore.session import get_session
from hypothesis import given
from hypothesis import strategies as st

from controller.cloudwatch.datapoints import (
    MAX_DATA_PER_REQUEST,
    MAX_REQUEST_BYTES,
    Datum,
    batches,
    encoded_size,
    pool_data,
    request_overhead,
)
from controller.model import InstanceState as S


def _values(counts: dict[S, int]) -> dict[str, float]:
    data = pool_data(counts, "group", now=1000.0, storage_resolution=60)
    return {datum.metric_name: datum.value for datum in data}


COUNTS = [
    pytest.param(
        {},
        {"FreeInstances": 0, "BusyInstances": 0, "StartingInstances": 0, "DrainingInstances": 0},
        id="empty-pool",
    ),
    pytest.param(
        {S.IDLE: 2, S.STARTING: 1, S.BUSY: 3, S.STALE: 1, S.DRAINING: 1},
        {"FreeInstances": 3, "BusyInstances": 4, "StartingInstances": 1, "DrainingInstances": 1},
        id="free-is-idle-plus-starting-busy-includes-stale",
    ),
    pytest.param(
        {S.DRAINED: 1, S.UNHEALTHY: 1, S.EXPIRED: 1, S.FAILED_BOOT: 1, S.TERMINATING: 2},
        {"FreeInstances": 0, "BusyInstances": 0, "StartingInstances": 0, "DrainingInstances": 0},
        id="gone-or-broken-count-nowhere",
    ),
]


@pytest.mark.parametrize(("counts", "expected"), COUNTS)
def test_pool_gauges_from_counts(counts: dict[S, int], expected: dict[str, float]) -> None:
    """Each gauge sums the instance states it stands for."""
    assert _values(counts) == expected


def test_pool_data_carries_dimension_time_and_resolution() -> None:
    """Every datum has the ASG dimension, the pass's time and the spec's storage resolution."""
    data = pool_data({S.IDLE: 1}, "jibri-recorders", now=1234.5, storage_resolution=1)
    assert {d.dimensions for d in data} == {(("AutoScalingGroupName", "jibri-recorders"),)}
    assert {(d.timestamp, d.storage_resolution, d.unit) for d in data} == {(1234.5, 1, "Count")}


def test_nothing_is_published_while_any_instance_is_unknown() -> None:
    """Right after a start the counts are guesses, so no gauge is published."""
    assert pool_data({S.UNKNOWN: 1, S.IDLE: 4}, "g", now=0.0, storage_resolution=60) == ()


def _datum(value: float = 1.0, name: str = "FreeInstances", dims: int = 1) -> Datum:
    dimensions = tuple((f"D{i}", "v" * 200) for i in range(dims))
    return Datum(name, value, dimensions, 0.0)


@pytest.mark.parametrize(
    ("datum", "reason"),
    [
        pytest.param(_datum(math.nan), "not a finite number", id="nan"),
        pytest.param(_datum(math.inf), "not a finite number", id="inf"),
        pytest.param(_datum(-math.inf), "not a finite number", id="minus-inf"),
        pytest.param(_datum(2.0**361), "beyond", id="too-large"),
        pytest.param(_datum(dims=31), "31 dimensions", id="too-many-dimensions"),
    ],
)
def test_refused_values_raise_instead_of_failing_the_request(datum: Datum, reason: str) -> None:
    """A value CloudWatch would refuse is caught before it can sink a whole request."""
    with pytest.raises(ValueError, match=reason):
        batches("Jibri", [datum])


def test_batches_split_at_one_thousand_data() -> None:
    """At most 1000 data go into one PutMetricData request, in their original order."""
    data = [_datum(float(i)) for i in range(2501)]
    requests = batches("Jibri", data)
    assert [len(r) for r in requests] == [1000, 1000, 501]
    assert [d for r in requests for d in r] == data


def test_batches_split_at_the_payload_limit() -> None:
    """Requests stay under the 1 MB payload limit even when fewer than 1000 data fill it."""
    data = [_datum(float(i), dims=30) for i in range(400)]
    requests = batches("Jibri", data)
    assert len(requests) > 1
    for request in requests:
        size = request_overhead("Jibri") + sum(encoded_size(d) for d in request)
        assert size <= MAX_REQUEST_BYTES
    assert [d for r in requests for d in r] == data


def test_encoded_size_bounds_the_real_query_encoding() -> None:
    """The size estimate is at least what botocore's query serializer actually produces."""
    model = ServiceModel(get_session().get_service_data("cloudwatch"))
    operation = model.operation_model("PutMetricData")
    data = [_datum(float(i) + 0.125, dims=3) for i in range(MAX_DATA_PER_REQUEST)]
    body = QuerySerializer().serialize_to_request(
        {
            "Namespace": "Jibri",
            "MetricData": [
                {
                    "MetricName": d.metric_name,
                    "Value": d.value,
                    "Timestamp": d.timestamp,
                    "Unit": d.unit,
                    "StorageResolution": d.storage_resolution,
                    "Dimensions": [{"Name": n, "Value": v} for n, v in d.dimensions],
                }
                for d in data
            ],
        },
        operation,
    )["body"]
    real = len(urlencode(body))
    estimate = request_overhead("Jibri") + sum(encoded_size(d) for d in data)
    assert real <= estimate < real * 1.1


def test_a_datum_too_large_for_any_request_raises() -> None:
    """A single datum that could never fit is reported, not looped on."""
    with pytest.raises(ValueError, match="do not fit"):
        batches("Jibri", [_datum()], max_bytes=100)


@given(
    st.lists(st.integers(min_value=0, max_value=30), max_size=300),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=20_000, max_value=200_000),
)
def test_batches_respect_both_limits_and_lose_nothing(
    dimension_counts: list[int], max_data: int, max_bytes: int
) -> None:
    """Whatever the data, every request respects both limits and the order is kept."""
    data = [_datum(float(i), dims=n) for i, n in enumerate(dimension_counts)]
    requests = batches("Jibri", data, max_data=max_data, max_bytes=max_bytes)
    assert [d for r in requests for d in r] == data
    for request in requests:
        assert 1 <= len(request) <= max_data
        size = request_overhead("Jibri") + sum(encoded_size(d, max_data) for d in request)
        assert size <= max_bytes
