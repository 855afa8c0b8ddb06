"""`python -m controller rollout POOL --launch-template-version V --config FILE`: start (or
cancel) a rollout by writing spec.rollout into the desired-state file, which the running
controller reloads (docs/fleet-operations.md).

The file is validated whole before it is replaced, and replaced atomically, so the
controller never reads half a file or a spec it would refuse. It is rewritten by PyYAML:
comments and key order are not kept. Where the desired state lives in Git, set spec.rollout
there instead; the controller does the same either way.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from controller.spec import parse_desired_state


class RolloutUsageError(Exception):
    """The pool or the file cannot take the rollout; printed without a traceback."""


def add_rollout_command(commands: Any) -> None:
    """Register the `rollout` subcommand on the CLI's subparsers."""
    rollout: argparse.ArgumentParser = commands.add_parser(
        "rollout", help="roll a pool onto a launch template version (writes spec.rollout)"
    )
    rollout.add_argument("pool", help="the pool's metadata.name")
    rollout.add_argument("--config", required=True, type=Path, help="desired-state YAML file")
    target = rollout.add_mutually_exclusive_group(required=True)
    target.add_argument("--launch-template-version", help="the version number to roll onto")
    target.add_argument("--cancel", action="store_true", help="remove spec.rollout")
    rollout.add_argument("--image-id", help="the version's AMI, to judge instances by it")
    rollout.add_argument("--canaries", type=int, help="instances to try first (default 1)")
    rollout.add_argument("--healthy-for", help="how long canaries must stay healthy (60s)")
    rollout.add_argument("--canary-timeout", help="how long canaries have to get there (15m)")


def rollout_documents(
    documents: list[Any], pool: str, settings: dict[str, Any] | None
) -> list[Any]:
    """The documents with `pool`'s spec.rollout set to `settings` (None: removed)."""
    found = False
    for document in documents:
        if isinstance(document, dict) and (document.get("metadata") or {}).get("name") == pool:
            spec = document.setdefault("spec", {})
            if not isinstance(spec, dict):
                raise RolloutUsageError(f"pool {pool!r} has no spec mapping")
            if settings is None:
                spec.pop("rollout", None)
            else:
                spec["rollout"] = settings
            found = True
    if not found:
        raise RolloutUsageError(f"no pool named {pool!r}")
    return documents


def cmd_rollout(args: argparse.Namespace) -> int:
    """Write the rollout into the file, after validating the whole result."""
    path: Path = args.config
    try:
        text = path.read_text(encoding="utf-8")
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise RolloutUsageError(f"cannot read {path}: {exc}") from exc
    settings: dict[str, Any] | None = None
    if not args.cancel:
        settings = {"launchTemplateVersion": args.launch_template_version}
        if args.image_id is not None:
            settings["imageId"] = args.image_id
        optional = {
            "canaries": args.canaries,
            "healthyFor": args.healthy_for,
            "canaryTimeout": args.canary_timeout,
        }
        settings |= {key: value for key, value in optional.items() if value is not None}
    updated = yaml.safe_dump_all(rollout_documents(documents, args.pool, settings), sort_keys=False)
    parse_desired_state(updated, str(path))  # raises ConfigError naming the field
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(updated)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise RolloutUsageError(f"cannot write {path}: {exc}") from exc
    what = "cancelled" if settings is None else f"to version {args.launch_template_version}"
    print(f"{path}: pool {args.pool}: rollout {what}")
    return 0
