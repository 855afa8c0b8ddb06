"""deploy/cloudformation deployed into the AWS emulator, and the real controller and agent run
against what it made.

The emulator's CloudFormation lacks four of the template's resource types (UNSUPPORTED_BY_MOTO).
The stack deployed here is the template with exactly those resources removed and references to
them replaced by placeholders; everything else is created by the emulator's CloudFormation from
the shipped template. What stays untested here, and where it is covered instead:

- AWS::SecretsManager::Secret (the generated token): deployed with ExistingTokenSecretArn, a
  secret made through the Secrets Manager API, which is the template's other supported path.
- AWS::S3::BucketPolicy (deny non-TLS), AWS::ServiceDiscovery::PrivateDnsNamespace and
  ::Service (how agents find the ECS controller): tests/test_deploy_cloudformation.py checks
  their resolved properties; cfn-lint checks them against the resource schemas.
- Properties the emulator accepts but ignores: the ASG's LifecycleHookSpecificationList and
  MetricsCollection; the bucket's PublicAccessBlockConfiguration, LifecycleConfiguration and
  OwnershipControls; IAM roles' ManagedPolicyArns; the task definition's Cpu, Memory,
  NetworkMode, RequiresCompatibilities, ExecutionRoleArn and TaskRoleArn; the service's
  NetworkConfiguration, DeploymentConfiguration and ServiceRegistries. The static tests check
  each of them on the resolved template.
- IAM conditions are stored but never evaluated by the emulator, and it has no
  SimulatePrincipalPolicy; the policies it resolved are read back here and evaluated by
  tests/support/iam.py against the real ARNs.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.settings import load_settings
from common.wire import TOKEN_ENV
from controller.spec import parse_desired_state
from tests.support.agent_process import agent_env, make_recorder, shutdown
from tests.support.aws import Emulator
from tests.support.cfn import Resolver, load_template
from tests.support.controller import controller_env, running_controller, wait_for
from tests.support.fake_imds import TARGET_STATE_PATH, FakeImds
from tests.support.iam import Request, allows, statements_of

pytestmark = pytest.mark.e2e

STACK = "jibri"
SECRET = "s3cret-token-from-secrets-manager"
UNSUPPORTED_BY_MOTO = {
    "AWS::S3::BucketPolicy",
    "AWS::SecretsManager::Secret",
    "AWS::ServiceDiscovery::PrivateDnsNamespace",
    "AWS::ServiceDiscovery::Service",
}
TAG = "autoscaling:ResourceTag/jibri-autoscaler:controller"


def deployable(template: dict[str, Any]) -> dict[str, Any]:
    """The template without the resources the emulator cannot create, references stubbed."""
    dropped = {n for n, r in template["Resources"].items() if r["Type"] in UNSUPPORTED_BY_MOTO}

    def stub(node: Any) -> Any:
        if isinstance(node, list):
            return [stub(item) for item in node]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Ref"} and node["Ref"] in dropped:
            return f"stub-{node['Ref']}"
        if set(node) == {"Fn::GetAtt"} and node["Fn::GetAtt"][0] in dropped:
            return f"arn:aws:stub:us-east-1:123456789012:{node['Fn::GetAtt'][0]}"
        return {key: stub(value) for key, value in node.items()}

    resources = {n: r for n, r in template["Resources"].items() if n not in dropped}
    text = json.dumps(stub({**template, "Resources": resources}))
    leftover = [n for n in dropped if re.search(rf"\$\{{{n}[.}}]", text)]
    assert not leftover, f"!Sub still names removed resources: {leftover}"
    return stub({**template, "Resources": resources})


@dataclass
class Deployed:
    emulator: Emulator
    parameters: dict[str, str]
    outputs: dict[str, str]
    physical: dict[str, str]
    secret_arn: str

    def client(self, service: str) -> Any:
        return self.emulator.boto3_client(service)

    def group(self) -> dict[str, Any]:
        name = self.outputs["AutoScalingGroupName"]
        answer = self.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[name]
        )
        group: dict[str, Any] = answer["AutoScalingGroups"][0]
        return group

    def user_data(self) -> str:
        versions = self.client("ec2").describe_launch_template_versions(
            LaunchTemplateId=self.physical["LaunchTemplate"]
        )["LaunchTemplateVersions"]
        data = versions[0]["LaunchTemplateData"]
        return base64.b64decode(data["UserData"]).decode()

    def containers(self) -> dict[str, dict[str, Any]]:
        task = self.client("ecs").describe_task_definition(
            taskDefinition=self.physical["ControllerTaskDefinition"]
        )["taskDefinition"]
        return {c["name"]: c for c in task["containerDefinitions"]}


def deploy(emulator: Emulator, **parameters: str) -> Deployed:
    ec2 = emulator.boto3_client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")
        for i, z in ((1, "a"), (2, "b"))
    ]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    secret = emulator.boto3_client("secretsmanager").create_secret(
        Name="jibri-agent-token", SecretString=SECRET
    )["ARN"]
    given = {
        "VpcId": vpc,
        "SubnetIds": ",".join(s["Subnet"]["SubnetId"] for s in subnets),
        "JibriAmiId": image,
        "ControllerImage": "registry.example/jibri-autoscaler:1",
        "ExistingTokenSecretArn": secret,
        "MonitoringCidr": "10.20.0.0/16",
        **parameters,
    }
    cloudformation = emulator.boto3_client("cloudformation")
    cloudformation.create_stack(
        StackName=STACK,
        TemplateBody=json.dumps(deployable(load_template())),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    (stack,) = cloudformation.describe_stacks(StackName=STACK)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    summaries = cloudformation.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    # The emulator lists resources whose Condition is false as blank entries.
    summaries = [s for s in summaries if s["LogicalResourceId"]]
    assert all(s["ResourceStatus"] == "CREATE_COMPLETE" for s in summaries)
    return Deployed(
        emulator,
        given,
        {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]},
        {s["LogicalResourceId"]: s["PhysicalResourceId"] for s in summaries},
        secret,
    )


def policy(document: Any) -> dict[str, Any]:
    """A policy document as IAM returned it. The emulator hands back inline role policies made
    by its CloudFormation as text, in Python's notation rather than JSON."""
    if isinstance(document, str):
        text = urllib.parse.unquote(document)
        try:
            parsed: dict[str, Any] = json.loads(text)
        except ValueError:
            parsed = ast.literal_eval(text)
    else:
        parsed = dict(document)
    # The emulator resolves `!If [cond, {...}, !Ref AWS::NoValue]` in a list to None where
    # CloudFormation drops the element.
    parsed["Statement"] = [s for s in parsed["Statement"] if s is not None]
    return parsed


def env_file(script: str) -> dict[str, str]:
    body = re.search(r"<<'ENV'\n(.*?)\nENV\n", script, re.S)
    assert body, "no env file in the user data"
    lines = [line for line in body.group(1).splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def fetch_token(deployed: Deployed, script: str) -> subprocess.CompletedProcess[str]:
    """Run the user data's token snippet as the boot script does, against the emulator."""
    snippet = re.search(r"<<'PY'\n(.*?)\nPY\n", script, re.S)
    call = re.search(r'"\$VENV/bin/python" - "([^"]+)" "([^"]+)" >', script)
    assert snippet and call
    return subprocess.run(
        [sys.executable, "-", call.group(1), call.group(2)],
        input=snippet.group(1),
        env=controller_env(deployed.emulator, token=None),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unsupported_types_are_exactly_what_the_emulator_lacks() -> None:
    """The list of untested resource types is exact: every other type of the template is one
    the emulator's CloudFormation creates."""
    from moto.cloudformation.parsing import resource_class_from_type

    kinds = {r["Type"] for r in load_template()["Resources"].values()}
    assert {k for k in kinds if resource_class_from_type(k) is None} == UNSUPPORTED_BY_MOTO


@pytest.mark.parametrize(
    "parameters",
    [
        pytest.param({}, id="ecs"),
        pytest.param(
            {
                "ControllerPlatform": "external",
                "ControllerUrl": "http://10.0.1.5:8080",
                "AgentFallback": "false",
                "RecordingsExpireAfterDays": "30",
            },
            id="external-no-fallback",
        ),
    ],
)
def test_stack_creates_every_supported_resource(
    emulator: Emulator, parameters: dict[str, str]
) -> None:
    """Every resource the template declares for these parameters, bar the unsupported types,
    is created, and the outputs name real resources."""
    deployed = deploy(emulator, **parameters)
    resolver = Resolver(load_template(), deployed.parameters, stack_name=STACK)
    expected = {
        name
        for name, resource in resolver.resources().items()
        if resource["Type"] not in UNSUPPORTED_BY_MOTO
    }
    assert set(deployed.physical) == expected
    assert deployed.group()["AutoScalingGroupName"] == f"{STACK}-recorders"
    bucket = deployed.outputs["RecordingsBucketName"]
    assert bucket in {b["Name"] for b in deployed.client("s3").list_buckets()["Buckets"]}
    assert deployed.outputs["TokenSecretArn"] == deployed.secret_arn


def test_group_launch_template_and_instance_role(emulator: Emulator) -> None:
    """The ASG carries the controller's tag and launches the Jibri AMI with the agent's
    instance profile, and its user data configures the agent with this stack's bucket."""
    deployed = deploy(emulator, PoolMinSize="1", PoolMaxSize="6")
    group = deployed.group()
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (1, 6, 1)
    tags = {t["Key"]: t["Value"] for t in group["Tags"]}
    assert tags["jibri-autoscaler:controller"] == STACK
    assert tags["jibri-autoscaler:pool"] == "recorders"
    assert group["LaunchTemplate"]["LaunchTemplateId"] == deployed.physical["LaunchTemplate"]
    versions = deployed.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=deployed.physical["LaunchTemplate"]
    )["LaunchTemplateVersions"]
    data = versions[0]["LaunchTemplateData"]
    assert (data["ImageId"], data["InstanceType"]) == (
        deployed.parameters["JibriAmiId"],
        "c5.xlarge",
    )
    profile_name = data["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
    profile = deployed.client("iam").get_instance_profile(InstanceProfileName=profile_name)
    (role,) = profile["InstanceProfile"]["Roles"]
    assert role["RoleName"] == deployed.physical["AgentRole"]
    env = env_file(deployed.user_data())
    settings = load_settings({}, {**env, TOKEN_ENV: "t"})
    assert settings.upload_bucket == deployed.outputs["RecordingsBucketName"]
    assert settings.controller_url == deployed.outputs["ControllerUrl"]
    encryption = deployed.client("s3").get_bucket_encryption(Bucket=settings.upload_bucket)
    (rule,) = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_policies_as_deployed_hold_against_real_arns(emulator: Emulator) -> None:
    """The policies the stack created, read back from IAM, let the controller act only on the
    tagged group and the agent write only below the prefix, with the real ARNs."""
    deployed = deploy(emulator)
    iam = deployed.client("iam")
    agent = iam.get_role_policy(RoleName=deployed.physical["AgentRole"], PolicyName="jibri-agent")
    agent_statements = statements_of([policy(agent["PolicyDocument"])])
    policy_arn = deployed.physical["ControllerPolicy"]
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)
    controller_statements = statements_of([policy(document["PolicyVersion"]["Document"])])

    group_arn = deployed.group()["AutoScalingGroupARN"]
    own = {TAG: STACK}
    for action in ("SetDesiredCapacity", "TerminateInstanceInAutoScalingGroup", "PutScalingPolicy"):
        assert allows(controller_statements, Request(f"autoscaling:{action}", group_arn, own))
        assert not allows(controller_statements, Request(f"autoscaling:{action}", group_arn, {}))
    bucket = f"arn:aws:s3:::{deployed.outputs['RecordingsBucketName']}"
    assert allows(agent_statements, Request("s3:PutObject", f"{bucket}/recordings/x/y.mp4"))
    assert not allows(agent_statements, Request("s3:PutObject", f"{bucket}/elsewhere/y.mp4"))
    assert allows(agent_statements, Request("autoscaling:SetInstanceProtection", group_arn, own))
    token = Request("secretsmanager:GetSecretValue", deployed.secret_arn)
    assert allows(agent_statements, token)
    execution = iam.get_role_policy(
        RoleName=deployed.physical["ControllerExecutionRole"], PolicyName="inject-token"
    )
    assert allows(statements_of([policy(execution["PolicyDocument"])]), token)


def test_boot_script_fetches_the_token(emulator: Emulator) -> None:
    """The token snippet of the deployed user data reads the secret from Secrets Manager."""
    deployed = deploy(emulator)
    result = fetch_token(deployed, deployed.user_data())
    assert result.returncode == 0, result.stderr
    assert result.stdout == SECRET


def test_task_definition_injects_the_token_and_a_valid_desired_state(emulator: Emulator) -> None:
    """The registered task definition takes the token from the secret and carries a desired
    state that validates and names the stack's group."""
    deployed = deploy(emulator, TargetFree="3")
    containers = deployed.containers()
    controller = containers["controller"]
    token, identity = controller["secrets"]
    assert token == {"name": TOKEN_ENV, "valueFrom": deployed.secret_arn}
    assert identity["name"] == "JIBRI_AUTOSCALER_IDENTITY_SECRET"
    (variable,) = containers["desired-state"]["environment"]
    (pool,) = parse_desired_state(variable["value"], "DESIRED_STATE").pools
    assert pool.spec.autoScalingGroupName == deployed.outputs["AutoScalingGroupName"]
    assert pool.spec.targetFree == 3


async def _until(check: Callable[[], Any], what: str, within: float = 90.0) -> Any:
    # The fake Jibri answers on this event loop, so polls must not block it.
    return await asyncio.to_thread(wait_for, check, within=within, what=what)


async def test_controller_and_agent_run_on_what_the_stack_made(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The controller, given the task definition's desired state and the token the boot script
    fetches, and an agent started with the boot script's settings (its warm gate asking a
    stand-in IMDS, which says InService), keep the stack's pool:
    the agent's idle recorder is seen, the group grows to targetFree, the fallback alarm and
    policy are put in place and the pool gauges land in the stack's namespace."""
    deployed = deploy(emulator)
    script = deployed.user_data()
    token = fetch_token(deployed, script)
    assert token.returncode == 0, token.stderr
    token_file = tmp_path / "token"
    token_file.write_text(token.stdout)
    config = tmp_path / "desired-state.yaml"
    (variable,) = deployed.containers()["desired-state"]["environment"]
    config.write_text(variable["value"])
    group = deployed.outputs["AutoScalingGroupName"]
    (instance,) = [i["InstanceId"] for i in deployed.group()["Instances"]]

    # The instance's metadata service: the boot script's settings turn the agent's warm gate
    # on, and an instance of the stack's group (no warm pool) is bound for service.
    imds = FakeImds(instance)
    imds.target_lifecycle_state = "InService"
    with running_controller(
        deployed.emulator, config, extra_args=("--token-file", str(token_file))
    ) as controller:
        recorder = await make_recorder(instance, tmp_path / "recorders")
        try:
            env = {**agent_env(deployed.emulator, "not-the-token"), **env_file(script)}
            env["JIBRI_AGENT_TOKEN_FILE"] = str(token_file)
            await recorder.start_agent(controller.url, env, ["--imds-url", await imds.start()])
            assert imds.calls.count(TARGET_STATE_PATH) >= 1

            def idle() -> bool:
                status, document = controller.get_json("/status")
                pools = document["pools"] if status == 200 else []
                states = {
                    i["instanceId"]: i["state"] for p in pools for i in p.get("instances", [])
                }
                return states.get(instance) == "idle"

            await _until(idle, "the agent's recorder to be idle")
            await _until(lambda: deployed.group()["DesiredCapacity"] == 2, "desired capacity 2")
            cloudwatch = deployed.client("cloudwatch")

            def fallback_alarm() -> list[dict[str, Any]]:
                alarms: list[dict[str, Any]] = cloudwatch.describe_alarms(
                    AlarmNamePrefix="jibri-autoscaler/recorders/"
                )["MetricAlarms"]
                return alarms

            (alarm,) = await _until(fallback_alarm, "the fallback alarm")
            assert alarm["Namespace"] == "Jibri" and alarm["MetricName"] == "JibriFree"
            policies = deployed.client("autoscaling").describe_policies(AutoScalingGroupName=group)[
                "ScalingPolicies"
            ]
            assert [p["PolicyName"] for p in policies] == ["jibri-autoscaler-fallback-scale-out"]

            def published() -> set[str]:
                metrics = cloudwatch.list_metrics(Namespace="Jibri")["Metrics"]
                return {m["MetricName"] for m in metrics}

            # The pool gauges from the controller and JibriFree from the agent's fallback.
            await _until(lambda: {"FreeInstances", "JibriFree"} <= published(), "metrics")
            assert (
                controller.metric("jibri_autoscaler_agent_reports_total", outcome="unauthorized")
                == 0
            )
        finally:
            await shutdown([recorder])
            await imds.close()

    iam = deployed.client("iam")
    policy_arn = deployed.physical["ControllerPolicy"]
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)
    statements = statements_of([policy(document["PolicyVersion"]["Document"])])
    assert allows(statements, Request("cloudwatch:PutMetricAlarm", alarm["AlarmArn"]))
    assert allows(
        statements, Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "Jibri"})
    )
