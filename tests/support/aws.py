"""A real AWS emulator (moto in server mode) on loopback, for end-to-end tests and the sandbox."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

REGION = "us-east-1"


@dataclass(frozen=True)
class Emulator:
    endpoint: str

    def env(self) -> dict[str, str]:
        """Environment that points any AWS client (ours, boto3, a subprocess) at the emulator."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def boto3_client(self, service: str):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@contextmanager
def running_emulator() -> Iterator[Emulator]:
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "false")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield Emulator(f"http://{host}:{port}")
    finally:
        server.stop()


def create_asg(
    emulator: Emulator, name: str, *, min_size: int, max_size: int, desired: int
) -> list[str]:
    """Create a launch template and an ASG in the emulator; return the instance ids."""
    ec2 = emulator.boto3_client("ec2")
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template = f"{name}-template"
    ec2.create_launch_template(
        LaunchTemplateName=template,
        LaunchTemplateData={"ImageId": image_id, "InstanceType": "c5.xlarge"},
    )
    autoscaling = emulator.boto3_client("autoscaling")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": template, "Version": "$Latest"},
        MinSize=min_size,
        MaxSize=max_size,
        DesiredCapacity=desired,
        AvailabilityZones=[f"{REGION}a"],
    )
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return sorted(i["InstanceId"] for i in groups["AutoScalingGroups"][0]["Instances"])
