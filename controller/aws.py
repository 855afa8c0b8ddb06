"""The AWS boundary: a narrow `AutoScaling` Protocol, its aiobotocore implementation, and the
per-region clients.

Exceptions::

    AwsError            one failed AWS call: `operation`, `kind` (throttled, validation,
                        not-found, auth, transport, other) and the underlying message

Retries happen once, inside botocore (standard mode); a call that still fails raises AwsError
and the reconcile loop backs off. Every request is counted and timed (`instrumented`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.parsers import ResponseParserError

from controller.errors import AwsError as AwsError  # re-exported for callers
from controller.fleet.launches_step import AioScalingActivities
from controller.fleet.rollout_step import AioLaunchTemplates
from controller.model import PROTECTION_BATCH as PROTECTION_BATCH
from controller.model import AsgInstance, AsgView
from controller.prometheus import Metrics
from controller.warm_pool.api import WARM_POOL_OPERATIONS, AioWarmPools

if TYPE_CHECKING:
    from types_aiobotocore_autoscaling import AutoScalingClient
    from types_aiobotocore_cloudwatch import CloudWatchClient

T = TypeVar("T")

AUTOSCALING_OPERATIONS: Final = (
    "DescribeAutoScalingGroups",
    "UpdateAutoScalingGroup",
    "SetDesiredCapacity",
    "SetInstanceProtection",
    "TerminateInstanceInAutoScalingGroup",
    "DescribeLifecycleHooks",
    "RecordLifecycleActionHeartbeat",
    "CompleteLifecycleAction",
    *WARM_POOL_OPERATIONS,
    "DescribeScalingActivities",
)

_THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "ResourceContention",
    }
)
_AUTH = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
    }
)
_VALIDATION = frozenset(
    {
        "ValidationError",
        "ValidationException",
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "MissingParameter",
        "InvalidAction",
    }
)


AwsFailure = ClientError | BotoCoreError | ResponseParserError
"""What botocore raises for a failed call. ResponseParserError (an unparseable answer, such as
an HTML error page) derives from neither ClientError nor BotoCoreError."""


def classify(exc: AwsFailure) -> str:
    """Map a botocore failure to the `kind` used in metrics and conditions."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")).lower()
        if code in _THROTTLED:
            return "throttled"
        if code in _AUTH:
            return "auth"
        if "notfound" in code.lower() or "not found" in message:
            return "not-found"
        if code in _VALIDATION:
            return "validation"
        return "other"
    if isinstance(exc, HTTPClientError | ConnectionError):
        return "transport"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return "auth"
    return "other"


async def instrumented(metrics: Metrics, service: str, operation: str, request: Awaitable[T]) -> T:
    """Await one AWS request (a not yet awaited client call), count and time it, and turn any
    botocore failure into AwsError."""
    started = time.perf_counter()
    outcome = "success"
    try:
        return await request
    except (ClientError, BotoCoreError, ResponseParserError) as exc:
        outcome = classify(exc)
        raise AwsError(operation, outcome, str(exc)) from exc
    finally:
        metrics.aws_requests_total.labels(service, operation, outcome).inc()
        metrics.aws_request_duration_seconds.labels(service, operation).observe(
            time.perf_counter() - started
        )


@dataclass(frozen=True)
class TerminationHook:
    """An EC2_INSTANCE_TERMINATING lifecycle hook of a group."""

    name: str
    heartbeat_timeout: float


class AutoScaling(Protocol):
    """The few Auto Scaling calls the controller makes."""

    async def describe_group(self, name: str) -> AsgView: ...

    async def set_bounds(self, name: str, min_size: int, max_size: int) -> None: ...

    async def set_desired_capacity(self, name: str, capacity: int) -> None: ...

    async def set_instance_protection(
        self, name: str, instance_ids: Sequence[str], protected: bool
    ) -> None: ...

    async def terminate_instance(self, instance_id: str, *, decrement: bool) -> None: ...

    async def termination_hooks(self, name: str) -> tuple[TerminationHook, ...]: ...

    async def record_lifecycle_heartbeat(
        self, name: str, hook: str, instance_id: str, token: str | None
    ) -> None: ...

    async def complete_lifecycle_action(
        self, name: str, hook: str, instance_id: str, token: str | None, result: str
    ) -> None: ...


class Instrumented:
    """An aiobotocore client of `SERVICE` whose every call goes through `instrumented`; its
    `OPERATIONS` have their series from the start. Subclasses declare `_client`'s type."""

    SERVICE: ClassVar[str]
    OPERATIONS: ClassVar[tuple[str, ...]]
    _client: Any

    def __init__(self, client: Any, metrics: Metrics) -> None:
        self._client = client
        self._metrics = metrics
        metrics.add_aws_operations(self.SERVICE, self.OPERATIONS)

    async def _call(self, operation: str, request: Awaitable[T]) -> T:
        return await instrumented(self._metrics, self.SERVICE, operation, request)


# Instrumented first: its `_call` is the one the mixins' stand-ins declare.
class AioAutoScaling(Instrumented, AioWarmPools, AioScalingActivities, AioLaunchTemplates):
    """`AutoScaling` (and `WarmPoolApi`, controller.warm_pool.api) over an aiobotocore client."""

    _client: AutoScalingClient

    SERVICE: ClassVar[str] = "autoscaling"
    OPERATIONS: ClassVar[tuple[str, ...]] = AUTOSCALING_OPERATIONS

    async def describe_group(self, name: str) -> AsgView:
        operation = "DescribeAutoScalingGroups"
        view: AsgView | None = None
        token: str | None = None
        while True:
            page = await self._call(
                operation,
                self._client.describe_auto_scaling_groups(
                    AutoScalingGroupNames=[name], NextToken=token
                )
                if token
                else self._client.describe_auto_scaling_groups(AutoScalingGroupNames=[name]),
            )
            for group in page.get("AutoScalingGroups", []):
                if group["AutoScalingGroupName"] != name:
                    continue
                view = AsgView(
                    name=name,
                    min_size=group["MinSize"],
                    max_size=group["MaxSize"],
                    desired=group["DesiredCapacity"],
                    instances=tuple(
                        AsgInstance(
                            instance_id=i["InstanceId"],
                            lifecycle_state=i["LifecycleState"],
                            health_status=i.get("HealthStatus", "Healthy"),
                            protected=bool(i.get("ProtectedFromScaleIn", False)),
                            template_version=i.get("LaunchTemplate", {}).get("Version"),
                        )
                        for i in group.get("Instances", [])
                    ),
                    template_id=group.get("LaunchTemplate", {}).get("LaunchTemplateId"),
                    template_version=group.get("LaunchTemplate", {}).get("Version"),
                )
            token = page.get("NextToken")
            if not token:
                break
        if view is None:
            raise AwsError(operation, "not-found", f"Auto Scaling group {name!r} does not exist")
        return view

    async def set_bounds(self, name: str, min_size: int, max_size: int) -> None:
        await self._call(
            "UpdateAutoScalingGroup",
            self._client.update_auto_scaling_group(
                AutoScalingGroupName=name, MinSize=min_size, MaxSize=max_size
            ),
        )

    async def set_desired_capacity(self, name: str, capacity: int) -> None:
        await self._call(
            "SetDesiredCapacity",
            self._client.set_desired_capacity(
                AutoScalingGroupName=name, DesiredCapacity=capacity, HonorCooldown=False
            ),
        )

    async def set_instance_protection(
        self, name: str, instance_ids: Sequence[str], protected: bool
    ) -> None:
        for start in range(0, len(instance_ids), PROTECTION_BATCH):
            batch = list(instance_ids[start : start + PROTECTION_BATCH])
            await self._call(
                "SetInstanceProtection",
                self._client.set_instance_protection(
                    AutoScalingGroupName=name,
                    InstanceIds=batch,
                    ProtectedFromScaleIn=protected,
                ),
            )

    async def terminate_instance(self, instance_id: str, *, decrement: bool) -> None:
        await self._call(
            "TerminateInstanceInAutoScalingGroup",
            self._client.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=decrement
            ),
        )

    async def termination_hooks(self, name: str) -> tuple[TerminationHook, ...]:
        answer = await self._call(
            "DescribeLifecycleHooks",
            self._client.describe_lifecycle_hooks(AutoScalingGroupName=name),
        )
        return tuple(
            sorted(
                (
                    TerminationHook(h["LifecycleHookName"], float(h.get("HeartbeatTimeout", 3600)))
                    for h in answer.get("LifecycleHooks", [])
                    if h.get("LifecycleTransition") == "autoscaling:EC2_INSTANCE_TERMINATING"
                ),
                key=lambda hook: hook.name,
            )
        )

    async def record_lifecycle_heartbeat(
        self, name: str, hook: str, instance_id: str, token: str | None
    ) -> None:
        extra = {"LifecycleActionToken": token} if token else {}
        await self._call(
            "RecordLifecycleActionHeartbeat",
            self._client.record_lifecycle_action_heartbeat(
                AutoScalingGroupName=name, LifecycleHookName=hook, InstanceId=instance_id, **extra
            ),
        )

    async def complete_lifecycle_action(
        self, name: str, hook: str, instance_id: str, token: str | None, result: str
    ) -> None:
        extra = {"LifecycleActionToken": token} if token else {}
        await self._call(
            "CompleteLifecycleAction",
            self._client.complete_lifecycle_action(
                AutoScalingGroupName=name,
                LifecycleHookName=hook,
                InstanceId=instance_id,
                LifecycleActionResult=result,
                **extra,
            ),
        )


@dataclass(frozen=True)
class AwsSettings:
    max_attempts: int = 3
    """Attempts per call in botocore's standard retry mode (1 = no retry)."""
    connect_timeout: float = 5.0
    read_timeout: float = 15.0


class AwsClients:
    """One aiobotocore client per (service, region), created on first use and closed by
    `close()`. Endpoint, credentials and the default region come from the standard chain
    (environment, including AWS_ENDPOINT_URL, shared config, instance/task role)."""

    def __init__(
        self, metrics: Metrics, settings: AwsSettings, *, session: AioSession | None = None
    ) -> None:
        self._metrics = metrics
        metrics.add_aws_operations(AioAutoScaling.SERVICE, AUTOSCALING_OPERATIONS)
        self._session = session if session is not None else get_session()
        self._config = AioConfig(
            retries={"mode": "standard", "max_attempts": settings.max_attempts},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )
        self._stack = AsyncExitStack()
        self._autoscaling: dict[str | None, AioAutoScaling] = {}
        self._autoscaling_clients: dict[str | None, AutoScalingClient] = {}
        self._cloudwatch: dict[str | None, CloudWatchClient] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    async def autoscaling(self, region: str | None) -> AioAutoScaling:
        client = await self.autoscaling_client(region)
        async with self._lock:
            if region not in self._autoscaling:
                self._autoscaling[region] = AioAutoScaling(client, self._metrics)
            return self._autoscaling[region]

    async def autoscaling_client(self, region: str | None) -> AutoScalingClient:
        """The raw Auto Scaling client `autoscaling` wraps, for other `Instrumented` APIs."""
        async with self._lock:
            self._check_open()
            if region not in self._autoscaling_clients:
                self._autoscaling_clients[region] = await self._stack.enter_async_context(
                    self._session.create_client(
                        "autoscaling", region_name=region, config=self._config
                    )
                )
            return self._autoscaling_clients[region]

    async def cloudwatch(self, region: str | None) -> CloudWatchClient:
        """A raw CloudWatch client; wrap its calls in `instrumented(..., "cloudwatch", ...)`."""
        async with self._lock:
            self._check_open()
            if region not in self._cloudwatch:
                self._cloudwatch[region] = await self._stack.enter_async_context(
                    self._session.create_client(
                        "cloudwatch", region_name=region, config=self._config
                    )
                )
            return self._cloudwatch[region]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("AWS clients are closed")

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            await self._stack.aclose()
