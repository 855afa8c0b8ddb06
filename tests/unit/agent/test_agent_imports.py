"""What the agent loads: only its own packages and runtime dependencies, never the controller
and never a development-only package (type stubs, test tools), as on a production install."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# Installed in the child before anything else: these names fail to import, as they would
# after `pip install jibri-autoscaler` without the dev extra.
_BLOCK_DEV_PACKAGES = """
import importlib.abc
import sys

DEV_ONLY = ("types_aiobotocore", "mypy_boto3", "moto", "boto3", "pytest", "hypothesis", "mypy")


class BlockDevPackages(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].startswith(DEV_ONLY):
            raise ImportError(f"No module named {name!r} (blocked: a development dependency)")
        return None


sys.meta_path.insert(0, BlockDevPackages())
"""


def _run_child(body: str) -> dict[str, object]:
    script = _BLOCK_DEV_PACKAGES + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def test_run_help_loads_no_controller_module() -> None:
    """`python -m agent run --help` imports no module of the controller package."""
    answer = _run_child(
        """
        import contextlib, io, json, sys
        from agent.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as shown:
            try:
                main(["run", "--help"])
            except SystemExit as exit:
                code = exit.code
        print(json.dumps({"code": code, "help": shown.getvalue(), "modules": sorted(sys.modules)}))
        """
    )
    assert answer["code"] == 0 and "--controller" in str(answer["help"])
    modules = answer["modules"]
    assert isinstance(modules, list) and "agent.cli" in modules
    assert [m for m in modules if m == "controller" or m.startswith("controller.")] == []


def test_every_agent_module_imports_without_dev_packages() -> None:
    """Every module under agent/ imports with type stubs and test tools unimportable, and
    none of them pulls in the controller: what `run` may load lazily is covered too."""
    answer = _run_child(
        """
        import importlib, json, pkgutil, sys
        import agent
        names = [m.name for m in pkgutil.walk_packages(agent.__path__, "agent.")]
        names = [n for n in names if n != "agent.__main__"]
        for name in names:
            importlib.import_module(name)
        print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
        """
    )
    imported = answer["imported"]
    assert isinstance(imported, list) and "agent.aws" in imported and "agent.daemon" in imported
    modules = answer["modules"]
    assert isinstance(modules, list)
    assert [m for m in modules if m.startswith("types_aiobotocore")] == []
    assert [m for m in modules if m == "controller" or m.startswith("controller.")] == []


def test_the_fallback_clients_open_without_type_stubs() -> None:
    """The fallback's AWS clients (what `run --fallback` opens at start) are created with the
    type stub packages unimportable."""
    answer = _run_child(
        """
        import asyncio, json, os
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        from agent.aws import AioAws, open_aws

        async def main():
            async with open_aws("us-east-1") as aws:
                return type(aws).__name__

        print(json.dumps({"opened": asyncio.run(main())}))
        """
    )
    assert answer == {"opened": "AioAws"}


def test_the_blocker_does_block() -> None:
    """The child's blocker makes a type stub package unimportable (so the tests above mean
    something on a development install, where the stubs are present)."""
    answer = _run_child(
        """
        import json
        try:
            import types_aiobotocore_autoscaling  # noqa: F401
        except ImportError as error:
            print(json.dumps({"blocked": str(error)}))
        else:
            print(json.dumps({"blocked": None}))
        """
    )
    assert "blocked" in str(answer["blocked"])
