"""The Dockerfile: multi-stage, small, non-root, health-checked, running `python -m controller run`.

There is no container engine here, so the Dockerfile is parsed and its promises are checked
one by one; the build context it admits is checked to hold everything the code imports.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.cli import build_parser

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "cc ", "clang", "python3-dev")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of ENTRYPOINT/CMD/HEALTHCHECK CMD; fails on the shell form."""
        text = self.argument
        if self.keyword == "HEALTHCHECK":
            text = text[text.index("CMD") + 3 :]
        value = json.loads(text.strip())
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value


def parse(text: str) -> list[list[Instruction]]:
    """Instructions grouped by stage (a leading group holds the ARGs before the first FROM)."""
    stages: list[list[Instruction]] = [[]]
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, argument = logical.partition(" ")
        instruction = Instruction(keyword.upper(), argument.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
        logical = ""
    assert not logical, "the Dockerfile ends inside a continued line"
    return stages


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def _first(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in stage if i.keyword == keyword]


def _args(stages: list[list[Instruction]]) -> dict[str, str]:
    args = {}
    for instruction in _first(stages[0], "ARG"):
        name, _, default = instruction.argument.partition("=")
        args[name] = default
    return args


def _image(stages: list[list[Instruction]], stage: list[Instruction]) -> str:
    image = stage[0].argument.split()[0]
    for name, value in _args(stages).items():
        image = image.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return image


def test_multi_stage_on_python_slim(stages: list[list[Instruction]]) -> None:
    """A build stage and a runtime stage on python:3.11-slim; the runtime copies from build."""
    built = stages[1:]
    assert len(built) >= 2
    assert all(_image(stages, stage) == "python:3.11-slim" for stage in built)
    names = [stage[0].argument.split()[-1] for stage in built[:-1]]
    copies = [i.argument for i in _first(built[-1], "COPY")]
    assert any(f"--from={name}" in copy for copy in copies for name in names)


def test_runtime_stage_has_no_build_tools(stages: list[list[Instruction]]) -> None:
    """The runtime stage installs no compiler or package and never runs pip."""
    runtime = " ".join(i.argument for i in _first(stages[-1], "RUN"))
    assert "apt-get" not in runtime and "pip " not in runtime
    assert not [tool for tool in BUILD_TOOLS if tool in runtime]


def test_runs_as_a_non_root_user(stages: list[list[Instruction]]) -> None:
    """The last USER of the runtime stage is a numeric non-root uid, set before the entrypoint."""
    runtime = stages[-1]
    users = _first(runtime, "USER")
    assert users, "no USER in the runtime stage"
    user = users[-1].argument.split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert runtime.index(users[-1]) < runtime.index(_first(runtime, "ENTRYPOINT")[-1])


def test_healthcheck_probes_healthz_with_python(stages: list[list[Instruction]]) -> None:
    """HEALTHCHECK runs python (no curl in the image) against /healthz on the listen port."""
    (check,) = _first(stages[-1], "HEALTHCHECK")
    command = check.exec_form()
    assert command[0] == "python" and command[1] == "-c"
    assert "curl" not in check.argument and "wget" not in check.argument
    listen = build_parser().parse_args(["run", *_first(stages[-1], "CMD")[-1].exec_form()]).listen
    assert f"http://127.0.0.1:{listen[1]}/healthz" in command[2]
    compile(command[2], "<healthcheck>", "exec")
    exposed = {i.argument for i in _first(stages[-1], "EXPOSE")}
    assert str(listen[1]) in exposed


def test_entrypoint_is_the_controller_cli(stages: list[list[Instruction]]) -> None:
    """ENTRYPOINT runs `python -m controller run`; CMD's default flags parse with the real CLI
    and read the config mounted at /etc/jibri-autoscaler/desired-state.yaml."""
    (entrypoint,) = _first(stages[-1], "ENTRYPOINT")
    assert entrypoint.exec_form() == ["python", "-m", "controller", "run"]
    (cmd,) = _first(stages[-1], "CMD")
    args = build_parser().parse_args(["run", *cmd.exec_form()])
    assert str(args.config) == "/etc/jibri-autoscaler/desired-state.yaml"
    assert args.listen[0] == "0.0.0.0"


def test_build_stage_checks_its_result(stages: list[list[Instruction]]) -> None:
    """The build stage installs the project's wheel and fails the build if the CLI cannot start."""
    build = " ".join(i.argument for i in _first(stages[1], "RUN"))
    assert "pip wheel" in build and "python -m controller --help" in build


def _admitted(root: Path) -> list[Path]:
    """Files of the repository that .dockerignore lets into the build context."""
    patterns = [
        line.strip()
        for line in (root / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    admitted = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not path.is_file() or relative.startswith((".git/", ".venv/")):
            continue
        included = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern[1:] if negate else pattern
            body = body.rstrip("/")
            matched = (
                fnmatch.fnmatch(relative, body)
                or relative.startswith(body + "/")
                or (body.startswith("**/") and fnmatch.fnmatch(relative, body[3:]))
                or (body.startswith("**/") and f"/{body[3:]}/" in f"/{relative}")
            )
            if matched:
                included = negate
        if included:
            admitted.append(path)
    return admitted


def test_build_context_holds_only_what_the_build_copies() -> None:
    """.dockerignore keeps tests, the venv and the git history out of the build context."""
    context = {p.relative_to(REPO).as_posix() for p in _admitted(REPO)}
    assert {"pyproject.toml", "README.md", "controller/cli.py", "agent/cli.py"} <= context
    assert not [p for p in context if p.startswith(("tests/", "sandbox/", "bench/", "deploy/"))]
    assert not [p for p in context if "__pycache__" in p]


def test_build_context_imports_without_the_repository(tmp_path: Path) -> None:
    """Every module of common/, controller/ and agent/ imports from the files the image is
    built from, so the image cannot miss a package the code needs."""
    for path in _admitted(REPO):
        target = tmp_path / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    modules = sorted(
        ".".join(p.relative_to(tmp_path).with_suffix("").parts)
        for package in ("common", "controller", "agent")
        for p in (tmp_path / package).rglob("*.py")
        if p.name != "__main__.py"
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(tmp_path)!r}), module.__file__\n"
    )
    # -S: no site-packages processing, so the editable install of the checkout is not seen; the
    # dependencies come from the venv's site-packages on PYTHONPATH.
    site = sysconfig.get_paths()["purelib"]
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{tmp_path}{os.pathsep}{site}"}
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    usage = subprocess.run(
        [sys.executable, "-S", "-m", "controller", "run", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 0 and "--config" in usage.stdout, usage.stderr


def test_dockerfile_comment_shows_a_working_run_line() -> None:
    """The usage comment mounts the config directory where CMD reads the desired state."""
    header = DOCKERFILE.read_text(encoding="utf-8").split("ARG", 1)[0]
    assert "-v $PWD/config:/etc/jibri-autoscaler:ro" in header
    assert (REPO / "config" / "desired-state.yaml").is_file()
