"""The sandbox's AWS: moto in server mode on loopback, seeded with the pools' ASGs and a bucket.

Everything the controller and agents do goes to this server over HTTP, through the standard AWS
chain (`AWS_ENDPOINT_URL`), exactly as it would go to AWS.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from controller.spec import DesiredState, JibriPool

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Emulator:
    endpoint: str
    region: str = DEFAULT_REGION
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict, compare=False, repr=False)

    def env(self) -> dict[str, str]:
        """Environment that points any AWS client (boto3, aiobotocore, a child) at the emulator."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "sandbox",
            "AWS_SECRET_ACCESS_KEY": "sandbox",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, service: str, region: str | None = None) -> Any:
        """A boto3 client for the emulator, made once per service and region (thread-safe)."""
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config

        key = (service, region or self.region)
        if key in self._clients:
            return self._clients[key]
        client = self._clients[key] = boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint,
            region_name=region or self.region,
            aws_access_key_id="sandbox",
            aws_secret_access_key="sandbox",
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
        )
        return client


@contextmanager
def running_emulator(region: str = DEFAULT_REGION) -> Iterator[Emulator]:
    """Start moto on 127.0.0.1 (a free port) in this process; stop it on exit."""
    from moto.server import ThreadedMotoServer

    # One line per request on stderr would tear the live view apart.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "false")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield Emulator(f"http://{host}:{port}", region)
    finally:
        server.stop()


def pool_region(emulator: Emulator, pool: JibriPool) -> str:
    return pool.spec.region or emulator.region


def create_pool(emulator: Emulator, pool: JibriPool) -> None:
    """A launch template and an ASG for `pool`, started at max(min, targetFree) instances.

    Starting with the target already met means every later scale-out is the controller
    answering demand, not filling an empty group.
    """
    spec = pool.spec
    region = pool_region(emulator, pool)
    ec2 = emulator.client("ec2", region)
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template = f"{spec.autoScalingGroupName}-template"
    ec2.create_launch_template(
        LaunchTemplateName=template,
        LaunchTemplateData={"ImageId": image_id, "InstanceType": "c5.xlarge"},
    )
    desired = min(spec.capacity.max, max(spec.capacity.min, spec.targetFree))
    emulator.client("autoscaling", region).create_auto_scaling_group(
        AutoScalingGroupName=spec.autoScalingGroupName,
        LaunchTemplate={"LaunchTemplateName": template, "Version": "$Latest"},
        MinSize=spec.capacity.min,
        MaxSize=spec.capacity.max,
        DesiredCapacity=desired,
        AvailabilityZones=[f"{region}a"],
    )


def create_bucket(emulator: Emulator, bucket: str) -> None:
    s3 = emulator.client("s3")
    if emulator.region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": emulator.region}
        )


def bootstrap(emulator: Emulator, state: DesiredState, bucket: str) -> None:
    """Create every pool's ASG and the recordings bucket."""
    for pool in state.pools:
        create_pool(emulator, pool)
    create_bucket(emulator, bucket)


@dataclass(frozen=True)
class GroupInstance:
    instance_id: str
    lifecycle_state: str


def describe_group(emulator: Emulator, pool: JibriPool) -> tuple[int, list[GroupInstance]]:
    """(desired capacity, instances) of the pool's ASG, as AWS reports them now."""
    client = emulator.client("autoscaling", pool_region(emulator, pool))
    answer = client.describe_auto_scaling_groups(
        AutoScalingGroupNames=[pool.spec.autoScalingGroupName]
    )
    group = answer["AutoScalingGroups"][0]
    instances = [
        GroupInstance(i["InstanceId"], i["LifecycleState"]) for i in group.get("Instances", [])
    ]
    return int(group["DesiredCapacity"]), instances


def list_keys(emulator: Emulator, bucket: str) -> list[str]:
    """Every object key in `bucket`."""
    paginator = emulator.client("s3").get_paginator("list_objects_v2")
    keys: list[str] = []
    for page in paginator.paginate(Bucket=bucket):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys
