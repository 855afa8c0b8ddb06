"""deploy/cloudformation: lint-clean, and every resource wired the way the code expects."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.settings import OPTIONS, load_settings
from common.wire import TOKEN_ENV
from controller.cli import build_parser
from controller.spec import parse_desired_state
from tests.support.cfn import REPO, TEMPLATE, Resolver, load_template

TEMPLATES = sorted((REPO / "deploy" / "cloudformation").glob("*.yaml"))
BASE = {
    "VpcId": "vpc-0abc",
    "SubnetIds": "subnet-0a,subnet-0b",
    "JibriAmiId": "ami-0123456789abcdef0",
    "ControllerImage": "registry.example/jibri-autoscaler:1",
}


def stack(**parameters: str) -> Resolver:
    return Resolver(load_template(), {**BASE, **parameters})


def one(resolver: Resolver, kind: str) -> dict[str, Any]:
    (resource,) = resolver.resources(kind).values()
    props: dict[str, Any] = resource["Properties"]
    return props


def containers(resolver: Resolver) -> dict[str, dict[str, Any]]:
    task = one(resolver, "AWS::ECS::TaskDefinition")
    return {c["Name"]: c for c in task["ContainerDefinitions"]}


def user_data(resolver: Resolver) -> str:
    data = one(resolver, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]["UserData"]
    assert isinstance(data, str)
    return data


def heredoc(script: str, marker: str) -> str:
    match = re.search(rf"<<'{marker}'\n(.*?)\n{marker}\n", script, re.S)
    assert match, f"no <<'{marker}' here-document in the user data"
    return match.group(1)


def env_file(script: str) -> dict[str, str]:
    lines = heredoc(script, "ENV").splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_there_is_a_template() -> None:
    """The deploy directory ships the stack template the walkthrough uses."""
    assert TEMPLATE in TEMPLATES


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.name for p in TEMPLATES])
def test_cfn_lint_is_clean(path: Path) -> None:
    """cfn-lint reports nothing, informational checks included."""
    lint = Path(REPO / ".venv" / "bin" / "cfn-lint")
    command = [str(lint)] if lint.exists() else [shutil.which("cfn-lint") or "cfn-lint"]
    result = subprocess.run(
        [*command, "--include-checks", "I", "--", str(path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_launch_template_not_launch_configuration() -> None:
    """Recorders launch from a launch template (launch configurations are deprecated)."""
    kinds = {r["Type"] for r in load_template()["Resources"].values()}
    assert "AWS::AutoScaling::LaunchConfiguration" not in kinds
    group = one(stack(), "AWS::AutoScaling::AutoScalingGroup")
    assert group["LaunchTemplate"]["LaunchTemplateId"] == stack().refs["LaunchTemplate"]
    assert "LaunchConfigurationName" not in group


def test_ami_and_instance_type_parameters() -> None:
    """The Jibri AMI is a typed parameter; the instance type defaults to c5.xlarge."""
    parameters = load_template()["Parameters"]
    assert parameters["JibriAmiId"]["Type"] == "AWS::EC2::Image::Id"
    assert "Default" not in parameters["JibriAmiId"]
    assert parameters["InstanceType"]["Default"] == "c5.xlarge"
    data = one(stack(InstanceType="c6i.2xlarge"), "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]
    assert (data["ImageId"], data["InstanceType"]) == (BASE["JibriAmiId"], "c6i.2xlarge")
    assert data["MetadataOptions"]["HttpTokens"] == "required"


def test_group_bounds_and_termination_hook() -> None:
    """The ASG takes min/max from the parameters, leaves desired to the controller, and holds
    terminating instances in a CONTINUE-by-default lifecycle hook."""
    group = one(
        stack(PoolMinSize="2", PoolMaxSize="7", TerminationHeartbeatTimeout="1200"),
        "AWS::AutoScaling::AutoScalingGroup",
    )
    assert (group["MinSize"], group["MaxSize"]) == ("2", "7")
    assert "DesiredCapacity" not in group
    (hook,) = group["LifecycleHookSpecificationList"]
    assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert hook["DefaultResult"] == "CONTINUE"
    assert hook["HeartbeatTimeout"] == "1200"
    resource = load_template()["Resources"]["AutoScalingGroup"]
    assert "UpdatePolicy" not in resource, "a rolling update would replace busy recorders"


@pytest.mark.parametrize(
    ("parameters", "algorithm", "expiry"),
    [
        pytest.param({}, "AES256", None, id="defaults"),
        pytest.param({"RecordingsExpireAfterDays": "90"}, "AES256", 90, id="expiring"),
        pytest.param(
            {"RecordingsKmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/abcd"},
            "aws:kms",
            None,
            id="kms",
        ),
    ],
)
def test_recordings_bucket_is_private_and_encrypted(
    parameters: dict[str, str], algorithm: str, expiry: int | None
) -> None:
    """The bucket blocks public access, encrypts at rest and expires recordings only if asked."""
    resolver = stack(**parameters)
    bucket = one(resolver, "AWS::S3::Bucket")
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == algorithm
    expiring = [r for r in bucket["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    assert [int(r["ExpirationInDays"]) for r in expiring] == ([expiry] if expiry else [])
    assert all(r["Prefix"] == "recordings" for r in expiring)
    policy = one(resolver, "AWS::S3::BucketPolicy")["PolicyDocument"]
    (deny,) = policy["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    retain = load_template()["Resources"]["RecordingsBucket"]
    assert retain["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize(
    "parameters",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"AgentFallback": "false"}, id="no-fallback"),
        pytest.param(
            {
                "PoolName": "eu-pool",
                "PoolMinSize": "0",
                "PoolMaxSize": "30",
                "TargetFree": "4",
                "ScaleOutMaxStep": "10",
                "ScaleInIdleFor": "15m",
                "CloudWatchNamespace": "Recorders",
            },
            id="custom",
        ),
    ],
)
def test_rendered_desired_state_is_valid_and_matches_the_stack(parameters: dict[str, str]) -> None:
    """The desired state handed to the ECS task validates and names this stack's group."""
    resolver = stack(**parameters)
    (variable,) = containers(resolver)["desired-state"]["Environment"]
    assert variable["Name"] == "DESIRED_STATE"
    (pool,) = parse_desired_state(variable["Value"], "DESIRED_STATE").pools
    values = resolver.refs
    assert pool.name == values["PoolName"]
    assert pool.spec.autoScalingGroupName == values["AutoScalingGroup"]
    assert (pool.spec.capacity.min, pool.spec.capacity.max) == (
        int(values["PoolMinSize"]),
        int(values["PoolMaxSize"]),
    )
    assert pool.spec.targetFree == int(values["TargetFree"])
    assert pool.spec.cloudWatch.namespace == values["CloudWatchNamespace"]
    fallback = pool.spec.cloudWatch.fallbackScaling
    if values["AgentFallback"] == "true":
        assert fallback is not None and fallback.namespace == values["CloudWatchNamespace"]
    else:
        assert fallback is None


def test_controller_container_runs_the_real_cli() -> None:
    """The controller container's command parses with the controller's own CLI, gets the token
    from Secrets Manager, and is health-checked on /healthz at the port it listens on."""
    resolver = stack(ControllerPort="9000")
    init, controller = containers(resolver)["desired-state"], containers(resolver)["controller"]
    args = build_parser().parse_args(["run", *controller["Command"]])
    assert args.listen == ("0.0.0.0", 9000)
    assert str(args.config) == "/etc/jibri-autoscaler/desired-state.yaml"
    assert f"validate {args.config}" in init["Command"][0]
    assert init["Essential"] is False
    assert controller["DependsOn"] == [{"ContainerName": "desired-state", "Condition": "SUCCESS"}]
    token, identity = controller["Secrets"]
    assert token == {"Name": TOKEN_ENV, "ValueFrom": resolver.refs["TokenSecret"]}
    assert identity == {
        "Name": "JIBRI_AUTOSCALER_IDENTITY_SECRET",
        "ValueFrom": resolver.refs["IdentitySecret"],
    }
    assert str(args.identity_certs) == "/opt/jibri-autoscaler/certs"
    assert len(args.identity_account) == 1 and not args.insecure_identity
    assert not any(e["Name"] == TOKEN_ENV for e in controller["Environment"])
    check = " ".join(controller["HealthCheck"]["Command"])
    assert "http://127.0.0.1:9000/healthz" in check
    assert controller["PortMappings"] == [{"ContainerPort": "9000", "Protocol": "tcp"}]
    assert controller["ReadonlyRootFilesystem"] is True
    assert "User" not in controller, "the controller runs as the image's non-root user"


def test_exactly_one_controller_at_a_time() -> None:
    """The ECS service runs one task and stops the old one before starting a new one."""
    service = one(stack(), "AWS::ECS::Service")
    assert service["DesiredCount"] == 1
    deployment = service["DeploymentConfiguration"]
    assert (deployment["MaximumPercent"], deployment["MinimumHealthyPercent"]) == (100, 0)
    task = one(stack(), "AWS::ECS::TaskDefinition")
    assert task["RequiresCompatibilities"] == ["FARGATE"]


def test_external_controller_creates_no_ecs_resources() -> None:
    """With ControllerPlatform=external the stack has no ECS pieces and agents use the given URL."""
    resolver = stack(ControllerPlatform="external", ControllerUrl="http://10.0.1.5:8080")
    kinds = {r["Type"] for r in resolver.resources().values()}
    assert not {k for k in kinds if k.startswith(("AWS::ECS::", "AWS::ServiceDiscovery::"))}
    assert "AWS::IAM::ManagedPolicy" in kinds
    assert env_file(user_data(resolver))["JIBRI_AGENT_CONTROLLER_URL"] == "http://10.0.1.5:8080"


def _ingress(resolver: Resolver, name: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = resolver.resources("AWS::EC2::SecurityGroup")[name]["Properties"][
        "SecurityGroupIngress"
    ]
    return rules


def test_security_groups_admit_only_agents_and_monitoring() -> None:
    """The controller's port is open to the recorders and MonitoringCidr only; the agents'
    metrics port to MonitoringCidr only; nothing is open to the world."""
    resolver = stack(MonitoringCidr="10.20.0.0/16", ControllerPort="8080", AgentMetricsPort="9466")
    controller = _ingress(resolver, "ControllerSecurityGroup")
    sources = sorted(r.get("CidrIp") or r["SourceSecurityGroupId"] for r in controller)
    assert sources == sorted(["10.20.0.0/16", resolver.get_att("AgentSecurityGroup", "GroupId")])
    assert {(r["FromPort"], r["ToPort"]) for r in controller} == {("8080", "8080")}
    (agent,) = _ingress(resolver, "AgentSecurityGroup")
    assert (agent["CidrIp"], agent["FromPort"], agent["ToPort"]) == ("10.20.0.0/16", "9466", "9466")
    default_cidr = load_template()["Parameters"]["MonitoringCidr"]["Default"]
    assert ipaddress.ip_network(default_cidr).is_loopback, "by default nobody is admitted"


@pytest.mark.parametrize(
    "parameters",
    [
        pytest.param({}, id="ecs"),
        pytest.param({"AgentFallback": "false", "AgentMetricsPort": "9100"}, id="no-fallback"),
        pytest.param(
            {"ControllerPlatform": "external", "ControllerUrl": "https://ctl.example:8443"},
            id="external",
        ),
    ],
)
def test_user_data_env_file_is_accepted_by_the_agent(parameters: dict[str, str]) -> None:
    """Every variable the user data writes is one the agent reads, with a value it accepts."""
    resolver = stack(**parameters)
    env = env_file(user_data(resolver))
    assert all(key.startswith("JIBRI_AGENT_") for key in env)
    settings = load_settings({}, {**env, TOKEN_ENV: "t0ken"})
    expected_url = resolver.value(load_template()["Outputs"]["ControllerUrl"]["Value"])
    assert settings.controller_url == expected_url
    assert settings.metrics_listen.port == int(resolver.refs["AgentMetricsPort"])
    assert settings.fallback is (resolver.refs["AgentFallback"] == "true")
    assert settings.fallback_namespace == resolver.refs["CloudWatchNamespace"]
    assert settings.upload_bucket == resolver.refs["RecordingsBucket"]
    assert settings.upload_prefix == resolver.refs["RecordingsPrefix"]
    known = {option.env for option in OPTIONS}
    assert set(env) <= known


def test_user_data_passes_shellcheck(tmp_path: Path) -> None:
    """The boot script is valid bash and clean under shellcheck."""
    script = tmp_path / "user-data.sh"
    script.write_text(user_data(stack()), encoding="utf-8")
    assert script.read_text().startswith("#!/bin/bash\n")
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: apt-get install shellcheck (make test installs it)"
    result = subprocess.run(
        [shellcheck, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout


def test_user_data_reads_the_token_the_stack_uses() -> None:
    """The boot script fetches the same secret ECS injects into the controller."""
    given = "arn:aws:secretsmanager:us-east-1:123456789012:secret:shared-AbCdEf"
    resolver = stack(ExistingTokenSecretArn=given)
    script = user_data(resolver)
    assert f'"{given}" > "$ENV_DIR/token.new"' in script
    assert containers(resolver)["controller"]["Secrets"][0]["ValueFrom"] == given
    assert "get_secret_value" in heredoc(script, "PY")


def test_outputs_name_what_the_walkthrough_needs() -> None:
    """The stack outputs the group, bucket, token, policy and controller URL."""
    outputs = load_template()["Outputs"]
    for name in ("AutoScalingGroupName", "RecordingsBucketName", "TokenSecretArn"):
        assert name in outputs
    assert {"ControllerPolicyArn", "ControllerUrl", "AgentSecurityGroupId"} <= set(outputs)


def test_rules_require_the_controller_inputs() -> None:
    """The template refuses ecs without an image and external without a URL."""
    rules = yaml.safe_dump(load_template()["Rules"])
    assert "ControllerImage" in rules and "ControllerUrl" in rules


def test_walkthrough_names_real_parameters_and_files() -> None:
    """deploy/README.md uses only parameters the template has and files that exist."""
    readme = (REPO / "deploy" / "README.md").read_text(encoding="utf-8")
    parameters = set(load_template()["Parameters"])
    block = re.search(r"--parameter-overrides \\\n((?:.*\\\n)*.*\n)", readme)
    assert block, "no --parameter-overrides in the walkthrough"
    overrides = re.findall(r"\b([A-Z][A-Za-z]+)=", block.group(1))
    assert {"JibriAmiId", "ControllerImage"} <= set(overrides) <= parameters
    assert re.findall(r"\b([A-Z][A-Za-z]+)=", readme)
    section = readme.split("| parameter | default | meaning |", 1)[1].split("\n\n", 1)[0]
    table = re.findall(r"^\| (`[^|]+)\|", section, re.M)
    named = {n for cell in table for n in re.findall(r"[A-Z][A-Za-z]+", cell)}
    assert named and named <= parameters
    for path in re.findall(
        r"`((?:cloudformation|jibri|systemd|prometheus|grafana)/[^`\s]+)`", readme
    ):
        assert (REPO / "deploy" / path).exists(), path
    for path in re.findall(r"\b(deploy/[\w./-]+\.(?:yaml|yml|sh|json|service))", readme):
        assert (REPO / path).exists(), path
    for output in re.findall(r"`(\w+)` output", readme):
        assert output in load_template()["Outputs"], output
