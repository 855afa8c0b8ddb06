"""The IAM policies of deploy/cloudformation grant what the code calls, and nothing wider."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from agent.upload.keys import DEFAULT_KEY_TEMPLATE, KeyTemplate
from tests.support.cfn import ACCOUNT, REGION, REPO, Resolver, load_template
from tests.support.iam import Request, allows, statements_of

STACK = "jibri"
BASE = {
    "VpcId": "vpc-0abc",
    "SubnetIds": "subnet-0a,subnet-0b",
    "JibriAmiId": "ami-0123456789abcdef0",
    "ControllerImage": "registry.example/jibri-autoscaler:1",
}
TAG = "autoscaling:ResourceTag/jibri-autoscaler:controller"
ASG = f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:0f0e-uuid:autoScalingGroupName/"
OWN_ASG = ASG + f"{STACK}-recorders"
ALARM = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:jibri-autoscaler/recorders/fallback-scale-out"
BUCKET = f"arn:aws:s3:::{STACK}-recordingsbucket-abc123"

# The S3 operations whose IAM action differs from their name, and what they act on.
S3_ACTIONS = {
    "put_object": ("s3:PutObject", "object"),
    "create_multipart_upload": ("s3:PutObject", "object"),
    "upload_part": ("s3:PutObject", "object"),
    "complete_multipart_upload": ("s3:PutObject", "object"),
    "abort_multipart_upload": ("s3:AbortMultipartUpload", "object"),
    "list_parts": ("s3:ListMultipartUploadParts", "object"),
    "head_object": ("s3:GetObject", "object"),
    "list_multipart_uploads": ("s3:ListBucketMultipartUploads", "bucket"),
}
# Auto Scaling and CloudWatch operations without resource-level permissions.
UNSCOPED = {"DescribeAutoScalingGroups", "DescribeAutoScalingInstances", "DescribeLifecycleHooks"}
UNSCOPED |= {"DescribePolicies", "DescribeAlarms", "PutMetricData", "GetMetricData"}
UNSCOPED |= {"DescribeWarmPool", "DescribeTags", "DescribeScalingActivities"}


def stack(**parameters: str) -> Resolver:
    return Resolver(load_template(), {**BASE, **parameters}, stack_name=STACK)


def agent_statements(resolver: Resolver) -> list[Mapping[str, Any]]:
    role = resolver.resources("AWS::IAM::Role")["AgentRole"]["Properties"]
    return statements_of(p["PolicyDocument"] for p in role["Policies"])


def controller_statements(resolver: Resolver) -> list[Mapping[str, Any]]:
    policy = resolver.resources("AWS::IAM::ManagedPolicy")["ControllerPolicy"]["Properties"]
    return statements_of([policy["PolicyDocument"]])


def aws_operations(package: str, services: tuple[str, ...]) -> set[tuple[str, str]]:
    """(service, operation name) of every AWS call written in a package's source."""
    session = botocore.session.get_session()
    names = {
        service: {xform_name(op): op for op in session.get_service_model(service).operation_names}
        for service in services
    }
    calls: set[tuple[str, str]] = set()
    for path in sorted((REPO / package).rglob("*.py")):
        for match in re.finditer(r"\.([a-z][a-z0-9_]+)\(", path.read_text(encoding="utf-8")):
            for service, operations in names.items():
                if match.group(1) in operations:
                    calls.add((service, match.group(1)))
    return calls


def request_for(service: str, operation: str, *, prefix: str = "recordings") -> Request:
    """The request the code makes, against this stack's own resources."""
    if service == "s3":
        action, target = S3_ACTIONS[operation]
        resource = f"{BUCKET}/{prefix}/2026/01/02/session/recording.mp4"
        return Request(action, BUCKET if target == "bucket" else resource)
    pascal = botocore.session.get_session().get_service_model(service)
    name = next(op for op in pascal.operation_names if xform_name(op) == operation)
    action = f"{service}:{name}"
    if name == "PutMetricData":
        return Request(action, "*", {"cloudwatch:namespace": "Jibri"})
    if name in UNSCOPED:
        return Request(action, "*")
    if service == "cloudwatch":
        return Request(action, ALARM)
    return Request(action, OWN_ASG, {TAG: STACK})


def test_the_scan_finds_the_calls_the_policies_are_about() -> None:
    """The source scan sees the key AWS calls of the controller and the agent (it is not empty)."""
    controller = aws_operations("controller", ("autoscaling", "cloudwatch"))
    agent = aws_operations("agent", ("autoscaling", "cloudwatch", "s3"))
    assert ("autoscaling", "terminate_instance_in_auto_scaling_group") in controller
    assert ("autoscaling", "set_desired_capacity") in controller
    assert ("autoscaling", "put_warm_pool") in controller
    assert ("s3", "put_object") in agent


def test_every_controller_call_is_allowed_on_its_own_tagged_group() -> None:
    """Each AWS operation in controller/ is granted by the ControllerPolicy for its own group."""
    statements = controller_statements(stack())
    denied = [
        op
        for service, op in sorted(aws_operations("controller", ("autoscaling", "cloudwatch")))
        if not allows(statements, request_for(service, op))
    ]
    assert denied == []


@pytest.mark.parametrize("fallback", ["true", "false"], ids=["fallback", "no-fallback"])
def test_every_agent_call_is_allowed_when_its_feature_is_on(fallback: str) -> None:
    """Each AWS operation in agent/ is granted to the recorders (fallback calls only with it)."""
    statements = agent_statements(stack(AgentFallback=fallback))
    fallback_only = {
        "put_metric_data",
        "describe_auto_scaling_instances",
        "set_instance_protection",
    }
    for service, op in sorted(aws_operations("agent", ("autoscaling", "cloudwatch", "s3"))):
        granted = allows(statements, request_for(service, op))
        expected = fallback == "true" or op not in fallback_only
        assert granted is expected, (service, op)


def test_every_s3_call_of_the_agent_has_a_known_iam_action() -> None:
    """A new S3 call in agent/ must be added to S3_ACTIONS (and to the policy) before it ships."""
    calls = {op for service, op in aws_operations("agent", ("s3",)) if service == "s3"}
    assert calls <= set(S3_ACTIONS)


CONTROLLER_CASES = [
    pytest.param(
        Request("autoscaling:SetDesiredCapacity", OWN_ASG, {TAG: STACK}), True, id="own-group"
    ),
    pytest.param(
        Request("autoscaling:SetDesiredCapacity", ASG + "other", {TAG: "another-stack"}),
        False,
        id="group-of-another-controller",
    ),
    pytest.param(
        Request("autoscaling:TerminateInstanceInAutoScalingGroup", ASG + "web", {}),
        False,
        id="untagged-group-terminate",
    ),
    pytest.param(
        Request("autoscaling:UpdateAutoScalingGroup", ASG + "web", {}),
        False,
        id="untagged-group-update",
    ),
    pytest.param(
        Request("autoscaling:DeletePolicy", ASG + "web", {TAG: "someone"}),
        False,
        id="foreign-group-policy",
    ),
    pytest.param(
        Request("autoscaling:DeleteAutoScalingGroup", OWN_ASG, {TAG: STACK}),
        False,
        id="never-delete-group",
    ),
    pytest.param(
        Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "Jibri"}),
        True,
        id="own-namespace",
    ),
    pytest.param(
        Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "AWS/EC2"}),
        False,
        id="other-namespace",
    ),
    pytest.param(Request("cloudwatch:PutMetricData", "*", {}), False, id="no-namespace"),
    pytest.param(
        Request(
            "cloudwatch:DeleteAlarms", f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:billing", {}
        ),
        False,
        id="foreign-alarm",
    ),
    pytest.param(
        Request("autoscaling:PutWarmPool", OWN_ASG, {TAG: STACK}), True, id="own-warm-pool"
    ),
    pytest.param(
        Request("autoscaling:DeleteWarmPool", ASG + "web", {}),
        False,
        id="untagged-group-warm-pool",
    ),
    pytest.param(
        Request("autoscaling:CreateOrUpdateTags", ASG + "web", {TAG: "someone"}),
        False,
        id="foreign-group-tags",
    ),
    pytest.param(Request("ec2:TerminateInstances", "*", {}), False, id="no-ec2-terminate"),
    pytest.param(Request("iam:PassRole", "*", {}), False, id="no-pass-role"),
]


@pytest.mark.parametrize(("request_", "granted"), CONTROLLER_CASES)
def test_controller_acts_only_on_what_is_its_own(request_: Request, granted: bool) -> None:
    """The controller may change only groups tagged for it, its namespace and its alarms."""
    assert allows(controller_statements(stack()), request_) is granted


AGENT_CASES = [
    pytest.param(
        "true", Request("s3:PutObject", f"{BUCKET}/recordings/a/b.mp4"), True, id="upload"
    ),
    pytest.param(
        "true", Request("s3:PutObject", f"{BUCKET}/other/b.mp4"), False, id="outside-prefix"
    ),
    pytest.param(
        "true",
        Request("s3:PutObject", f"{BUCKET}/recordings-evil/b.mp4"),
        False,
        id="prefix-lookalike",
    ),
    pytest.param(
        "true",
        Request("s3:PutObject", "arn:aws:s3:::another-bucket/recordings/b"),
        False,
        id="other-bucket",
    ),
    pytest.param(
        "true", Request("s3:DeleteObject", f"{BUCKET}/recordings/a/b.mp4"), False, id="no-delete"
    ),
    pytest.param("true", Request("s3:ListBucket", BUCKET), False, id="no-listing"),
    pytest.param(
        "true",
        Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "Jibri"}),
        True,
        id="fallback-own-namespace",
    ),
    pytest.param(
        "true",
        Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "Other"}),
        False,
        id="fallback-other-namespace",
    ),
    pytest.param(
        "true",
        Request("autoscaling:SetInstanceProtection", OWN_ASG, {TAG: STACK}),
        True,
        id="fallback-protect-own-group",
    ),
    pytest.param(
        "true",
        Request("autoscaling:SetInstanceProtection", ASG + "web", {TAG: STACK}),
        False,
        id="fallback-protect-other-group",
    ),
    pytest.param(
        "true",
        Request("autoscaling:SetInstanceProtection", OWN_ASG, {}),
        False,
        id="fallback-protect-untagged",
    ),
    pytest.param(
        "false",
        Request("autoscaling:SetInstanceProtection", OWN_ASG, {TAG: STACK}),
        False,
        id="no-fallback-no-protection",
    ),
    pytest.param(
        "false",
        Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "Jibri"}),
        False,
        id="no-fallback-no-metrics",
    ),
    pytest.param(
        "true",
        Request("autoscaling:SetDesiredCapacity", OWN_ASG, {TAG: STACK}),
        False,
        id="never-capacity",
    ),
    pytest.param(
        "true",
        Request("autoscaling:TerminateInstanceInAutoScalingGroup", OWN_ASG, {TAG: STACK}),
        False,
        id="never-terminate",
    ),
]


@pytest.mark.parametrize(("fallback", "request_", "granted"), AGENT_CASES)
def test_agent_writes_only_below_the_prefix_and_protects_only_with_fallback(
    fallback: str, request_: Request, granted: bool
) -> None:
    """Recorders upload below the prefix, publish in the namespace, protect only if enabled."""
    assert allows(agent_statements(stack(AgentFallback=fallback)), request_) is granted


@pytest.mark.parametrize("prefix", ["recordings", "tenant-a/jibri"], ids=["default", "nested"])
def test_keys_the_agent_renders_fall_below_the_granted_prefix(prefix: str) -> None:
    """The agent's own key template, with the stack's prefix, yields keys the role may write."""
    statements = agent_statements(stack(RecordingsPrefix=prefix))
    template = KeyTemplate(DEFAULT_KEY_TEMPLATE, prefix=prefix, instance="i-0123456789abcdef0")
    key = template.render(
        session="abc-session", file="meeting.mp4", enqueued_at=datetime(2026, 1, 2, tzinfo=UTC)
    )
    assert allows(statements, Request("s3:PutObject", f"{BUCKET}/{key}"))
    assert not allows(statements, Request("s3:PutObject", f"{BUCKET}/x{key}"))


def test_agent_reads_only_the_token_secret() -> None:
    """The recorders may read the token secret they were given, and no other secret."""
    given = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:shared-token-AbCdEf"
    statements = agent_statements(stack(ExistingTokenSecretArn=given))
    assert allows(statements, Request("secretsmanager:GetSecretValue", given))
    other = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db-password-AbCdEf"
    assert not allows(statements, Request("secretsmanager:GetSecretValue", other))


def test_kms_is_granted_only_for_the_bucket_key() -> None:
    """With SSE-KMS the recorders may use that one key; with SSE-S3 no KMS at all."""
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    with_kms = agent_statements(stack(RecordingsKmsKeyArn=key))
    assert allows(with_kms, Request("kms:GenerateDataKey", key))
    assert not allows(with_kms, Request("kms:Decrypt", key.replace("1234abcd", "99999999")))
    assert not allows(agent_statements(stack()), Request("kms:GenerateDataKey", key))


def test_execution_role_injects_only_the_token() -> None:
    """ECS's execution role may read the token secret and nothing else from Secrets Manager."""
    role = stack().resources("AWS::IAM::Role")["ControllerExecutionRole"]["Properties"]
    statements = statements_of(p["PolicyDocument"] for p in role["Policies"])
    secret = stack().refs["TokenSecret"]
    assert allows(statements, Request("secretsmanager:GetSecretValue", secret))
    assert not allows(statements, Request("secretsmanager:GetSecretValue", secret + "x"))
    assert [a.split("/")[-1] for a in role["ManagedPolicyArns"]] == [
        "AmazonECSTaskExecutionRolePolicy"
    ]


def test_tag_condition_names_the_tag_the_group_carries() -> None:
    """The tag the controller's condition requires is the tag the ASG is created with."""
    resolver = stack()
    group = resolver.resources("AWS::AutoScaling::AutoScalingGroup")["AutoScalingGroup"]
    tags = {t["Key"]: t["Value"] for t in group["Properties"]["Tags"]}
    assert tags[TAG.removeprefix("autoscaling:ResourceTag/")] == STACK
    conditioned = [
        s
        for s in controller_statements(resolver)
        if TAG in s.get("Condition", {}).get("StringEquals", {})
    ]
    assert len(conditioned) == 1


def test_no_statement_grants_every_action() -> None:
    """No policy of the stack uses a bare `*` or a `service:*` action."""
    resolver = stack()
    documents: list[Any] = []
    for resource in resolver.resources().values():
        props = resource["Properties"]
        documents += [p["PolicyDocument"] for p in props.get("Policies", [])]
        if "PolicyDocument" in props and resource["Type"] != "AWS::S3::BucketPolicy":
            documents.append(props["PolicyDocument"])
    actions = [
        a
        for s in statements_of(documents)
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]
    assert actions, "no statements found"
    assert not [a for a in actions if a == "*" or a.endswith(":*")]
