"""Read deploy/cloudformation templates the way CloudFormation does, for tests.

`load_template` parses the short-form tags (!Ref, !Sub, …) with cfn-lint's decoder.
`resolve` evaluates the intrinsic functions for one set of parameters, with made-up physical ids
for the resources (a stack in the emulator checks them against the real thing).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "cloudformation" / "jibri-autoscaler.yaml"

ACCOUNT = "123456789012"
REGION = "us-east-1"
_NO_VALUE = object()
_SUB_VAR = re.compile(r"\$\{([^}!]+)\}")


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    from cfnlint.decode import decode_str

    template, problems = decode_str(path.read_text(encoding="utf-8"))
    if problems:
        raise ValueError(f"{path}: {problems}")
    return json.loads(json.dumps(template))  # plain dicts and lists


def parameter_values(template: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, Any]:
    """Each parameter's value: the given one, else its default (List types split on commas)."""
    values: dict[str, Any] = {}
    for name, spec in template["Parameters"].items():
        if name in given:
            raw = given[name]
        elif "Default" in spec:
            raw = str(spec["Default"])
        else:
            raise KeyError(f"parameter {name} has no default and was not given")
        is_list = spec["Type"].startswith("List<") or spec["Type"] == "CommaDelimitedList"
        values[name] = raw.split(",") if is_list else raw
    unknown = set(given) - set(values)
    if unknown:
        raise KeyError(f"unknown parameters: {sorted(unknown)}")
    return values


class Resolver:
    def __init__(
        self,
        template: Mapping[str, Any],
        parameters: Mapping[str, str],
        *,
        stack_name: str = "jibri",
    ) -> None:
        self.template = template
        self.refs: dict[str, Any] = {
            **parameter_values(template, parameters),
            "AWS::StackName": stack_name,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        self.conditions: dict[str, bool] = {}
        for name, expression in template.get("Conditions", {}).items():
            self.conditions[name] = bool(self.value(expression))
        for name, resource in template["Resources"].items():
            self.refs.setdefault(name, self._physical_id(name, resource["Type"]))

    def _physical_id(self, name: str, kind: str) -> str:
        properties = self.template["Resources"][name].get("Properties", {})
        if kind == "AWS::AutoScaling::AutoScalingGroup" and "AutoScalingGroupName" in properties:
            return str(self.value(properties["AutoScalingGroupName"]))
        if kind == "AWS::S3::Bucket":
            return f"{self.refs['AWS::StackName']}-{name.lower()}-abc123"
        if kind == "AWS::SecretsManager::Secret":
            return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"
        return f"{self.refs['AWS::StackName']}-{name}-ABC123"

    def active(self, resource: Mapping[str, Any]) -> bool:
        condition = resource.get("Condition")
        return condition is None or self.conditions[condition]

    def resources(self, kind: str | None = None) -> dict[str, dict[str, Any]]:
        """Resources created for these parameters, properties resolved."""
        out = {}
        for name, resource in self.template["Resources"].items():
            if (kind is None or resource["Type"] == kind) and self.active(resource):
                out[name] = {**resource, "Properties": self.value(resource.get("Properties", {}))}
        return out

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.template["Resources"][name]["Type"]
        if kind == "AWS::S3::Bucket" and attribute == "Arn":
            return f"arn:aws:s3:::{self.refs[name]}"
        return f"arn:aws:stub:{REGION}:{ACCOUNT}:{name}/{attribute}"

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.value(item) for item in node]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return _NO_VALUE if arg == "AWS::NoValue" else self.refs[arg]
            if key == "Condition":
                return self.conditions[arg]
            if key == "Fn::If":
                name, then, otherwise = arg
                return self.value(then if self.conditions[name] else otherwise)
            if key == "Fn::Equals":
                left, right = (self.value(a) for a in arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Fn::And":
                return all(self.value(a) for a in arg)
            if key == "Fn::Or":
                return any(self.value(a) for a in arg)
            if key == "Fn::Join":
                separator, items = arg
                return separator.join(str(i) for i in self.value(items))
            if key == "Fn::Split":
                separator, text = arg
                return str(self.value(text)).split(separator)
            if key == "Fn::Select":
                index, items = arg
                return self.value(items)[int(self.value(index))]
            if key == "Fn::GetAtt":
                name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(name, attribute)
            if key == "Fn::Base64":
                return self.value(arg)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key.startswith("Fn::"):
                raise NotImplementedError(key)
        resolved = {k: self.value(v) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else arg
        local = {k: self.value(v) for k, v in variables.items()}

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in local:
                return str(local[name])
            if "." in name:
                resource, attribute = name.split(".", 1)
                return self.get_att(resource, attribute)
            value = self.refs[name]
            return ",".join(value) if isinstance(value, list) else str(value)

        return _SUB_VAR.sub(lookup, text).replace("${!", "${")
