"""A small IAM evaluator for identity policies, enough to check ours and strict about the rest.

It answers whether a set of Allow statements grants one request (action, resource, context):
wildcards in Action and Resource, and the condition operators our policies use. Anything else
(Deny, NotAction, NotResource, another operator) raises instead of guessing, so a policy that
grows beyond what this understands fails its tests loudly rather than passing them silently.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    action: str
    resource: str = "*"
    context: Mapping[str, str] = field(default_factory=dict)
    """Condition keys of the request, e.g. {"cloudwatch:namespace": "Jibri"}."""


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _glob(pattern: str, value: str, *, case_sensitive: bool) -> bool:
    # IAM wildcards are * and ?; fnmatch's [..] classes do not exist in IAM, so escape them.
    escaped = pattern.replace("[", "[[]")
    if case_sensitive:
        return fnmatch.fnmatchcase(value, escaped)
    return fnmatch.fnmatchcase(value.lower(), escaped.lower())


def _condition_holds(operator: str, key: str, wanted: Any, context: Mapping[str, str]) -> bool:
    if key not in context:
        return operator.endswith("IfExists")
    actual = context[key]
    base = operator.removesuffix("IfExists")
    values = [str(v) for v in _as_list(wanted)]
    if base == "StringEquals":
        return actual in values
    if base == "StringEqualsIgnoreCase":
        return actual.lower() in (v.lower() for v in values)
    if base in ("StringLike", "ArnLike"):
        return any(_glob(v, actual, case_sensitive=True) for v in values)
    if base == "Bool":
        return actual.lower() in (v.lower() for v in values)
    raise NotImplementedError(f"condition operator {operator}")


def _statement_allows(statement: Mapping[str, Any], request: Request) -> bool:
    unsupported = {"NotAction", "NotResource", "NotPrincipal", "Principal"} & set(statement)
    if unsupported:
        raise NotImplementedError(f"statement element(s) {sorted(unsupported)}")
    if statement.get("Effect") != "Allow":
        raise NotImplementedError(f"effect {statement.get('Effect')!r}")
    actions = _as_list(statement["Action"])
    if not any(_glob(a, request.action, case_sensitive=False) for a in actions):
        return False
    resources = _as_list(statement["Resource"])
    if not any(_glob(r, request.resource, case_sensitive=True) for r in resources):
        return False
    for operator, clauses in statement.get("Condition", {}).items():
        for key, wanted in clauses.items():
            if not _condition_holds(operator, key, wanted, request.context):
                return False
    return True


def statements_of(documents: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [s for doc in documents for s in _as_list(doc["Statement"])]


def allows(statements: Sequence[Mapping[str, Any]], request: Request) -> bool:
    """Whether any statement grants the request (no statement here denies)."""
    return any(_statement_allows(s, request) for s in statements)
