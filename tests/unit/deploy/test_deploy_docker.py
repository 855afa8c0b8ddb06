"""The Dockerfile: multi-stage, small, non-root, health-checked, running `python -m controller run`.

There is no container engine here, so the Dockerfile is parsed and its promises are checked
one by one; the build context it admits is checked to hold everything the code imports. Its
build and runtime stages are replayed, and the result run, in tests/e2e/test_runtime_install.py.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from controller.cli import build_parser
from tests.support.dockerfile import Instruction, Stage, base_image, parse

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "cc ", "clang", "python3-dev")


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def _first(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in stage if i.keyword == keyword]


def test_multi_stage_on_python_slim(stages: list[list[Instruction]]) -> None:
    """A build stage and a runtime stage on python:3.11-slim; the runtime copies from build."""
    built = stages[1:]
    assert len(built) >= 2
    assert all(base_image(stages, stage) == "python:3.11-slim" for stage in built)
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


@pytest.mark.parametrize(
    ("command", "mapped"),
    [
        pytest.param(
            "python -m venv /opt/x && /opt/x/bin/pip wheel --wheel-dir /tmp/wheels .",
            "python -m venv R/opt/x && R/opt/x/bin/pip wheel --wheel-dir R/tmp/wheels .",
            id="image-paths",
        ),
        pytest.param(
            "python -m controller --help >/dev/null",
            "python -m controller --help >/dev/null",
            id="dev-null-stays",
        ),
        pytest.param(
            "useradd --shell /usr/sbin/nologin x", "useradd --shell /usr/sbin/nologin x", id="usr"
        ),
        pytest.param("PATH=/opt/v/bin:$PATH", "PATH=R/opt/v/bin:$PATH", id="env-value"),
    ],
)
def test_replay_maps_image_paths_into_its_root(command: str, mapped: str) -> None:
    """The replay places the image's own directories under the stage's root and leaves the
    base system's (/usr, /dev) alone."""
    assert Stage(name="build", root=Path("R")).map(command) == mapped
