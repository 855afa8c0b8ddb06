"""The shape of what ships: small modules, and a wheel that holds the two daemons and common/.

The wheel itself is built and opened by tests/e2e/test_runtime_install.py; here the package
discovery that builds it is checked without a build.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from setuptools import find_namespace_packages, find_packages

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("common", "controller", "agent")
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for package in SHIPPED for p in (REPO / package).rglob("*.py"))


@pytest.mark.parametrize(
    "module", [pytest.param(p, id=p.relative_to(REPO).as_posix()) for p in _modules()]
)
def test_shipped_module_is_at_most_400_lines(module: Path) -> None:
    """Every module of common/, controller/ and agent/ stays within 400 lines."""
    lines = len(module.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module.relative_to(REPO)} has {lines} lines"


def _included() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    include: list[str] = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return include


def test_wheel_packages_are_the_daemons_and_common() -> None:
    """The packages setuptools puts in the wheel are common, controller, agent and their
    subpackages: no sandbox, bench or tests."""
    packages = find_packages(str(REPO), include=_included())
    assert {name.split(".")[0] for name in packages} == set(SHIPPED)


def test_every_shipped_directory_is_a_package() -> None:
    """Each directory of Python files under common/, controller/ and agent/ has an __init__.py,
    so package discovery cannot leave it out of the wheel."""
    everything = set(find_namespace_packages(str(REPO), include=_included()))
    regular = set(find_packages(str(REPO), include=_included()))
    with_code = {name for name in everything if any((REPO / name.replace(".", "/")).glob("*.py"))}
    assert with_code <= regular, sorted(with_code - regular)
