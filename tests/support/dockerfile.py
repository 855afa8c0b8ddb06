"""A Dockerfile reader, and a replay of its stages without a container engine.

The replay runs the Dockerfile's own COPY and RUN steps on this machine, each stage in a
directory standing in for its filesystem root: absolute paths under the image's own directories
(/opt, /src, /tmp, /etc, …) are mapped into that directory, and `python` is this machine's
interpreter of the base image's version. A later stage is laid out at the same path after the
earlier stage's root is moved away, so absolute paths written during the build (a virtualenv's
script headers) stay right and nothing from the build stage is reachable at run time, as in an
image. Steps that would administer this machine itself (creating users and groups) are recorded
and not run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


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


def build_args(stages: list[list[Instruction]]) -> dict[str, str]:
    """The global ARGs (before the first FROM) with their defaults."""
    args = {}
    for instruction in stages[0]:
        if instruction.keyword == "ARG":
            name, _, default = instruction.argument.partition("=")
            args[name] = default
    return args


def base_image(stages: list[list[Instruction]], stage: list[Instruction]) -> str:
    image = stage[0].argument.split()[0]
    for name, value in build_args(stages).items():
        image = image.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return image


# Top-level directories of the image that the replay maps into the stage's root. /bin, /usr,
# /dev and /proc stay this machine's: they hold the base image's shell and tools.
_MAPPED = ("opt", "src", "tmp", "etc", "var", "srv", "app", "home", "nonexistent")
_ABSOLUTE = re.compile(r"(?<![\w./-])/(?:" + "|".join(_MAPPED) + r")(?=/|\b)")
# Commands that change this machine's users and groups: the replay does not run them.
NOT_REPLAYED = ("groupadd", "useradd", "adduser", "addgroup")


@dataclass
class Stage:
    name: str
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    skipped: list[str] = field(default_factory=list)
    earlier: dict[str, Path] = field(default_factory=dict)
    """With keep_earlier: where each earlier stage's filesystem was moved (the caller removes)."""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str | None = None

    def map(self, text: str) -> str:
        """`text` with the image's absolute paths placed under this stage's root."""
        return _ABSOLUTE.sub(lambda m: f"{self.root}{m.group(0)}", text)

    def environ(self, base: dict[str, str]) -> dict[str, str]:
        """The process environment of a command in this stage: `base`, then the stage's ENV."""
        return {**base, **self.env}

    def argv(self, command: list[str]) -> list[str]:
        return [self.map(part) for part in command]


def _env_pairs(stage: Stage, argument: str) -> dict[str, str]:
    """ENV's pairs in this machine's terms: image paths mapped, then $VARs expanded."""
    pairs = {}
    for token in shlex.split(argument):
        name, _, value = token.partition("=")
        pairs[name] = re.sub(
            r"\$\{?(\w+)\}?", lambda m: stage.env.get(m.group(1), ""), stage.map(value)
        )
    return pairs


def replay(
    dockerfile: Path,
    context: Path,
    root: Path,
    *,
    python: Path,
    base_env: dict[str, str],
    keep_earlier: bool = False,
) -> Stage:
    """Replay every stage of `dockerfile` with build context `context`; return the last stage,
    laid out at `root`. `python` stands in for the base image's interpreter."""
    stages = parse(dockerfile.read_text(encoding="utf-8"))
    shims = root.parent / f"{root.name}-base-image-bin"
    shims.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        (shims / name).unlink(missing_ok=True)
        (shims / name).symlink_to(python)
    # The base image's own PATH: its python first, then the shell and tools it shares with us.
    machine_env = {**base_env, "PATH": f"{shims}{os.pathsep}{base_env.get('PATH', '')}"}
    done: dict[str, Path] = {}
    stage: Stage | None = None
    for index, instructions in enumerate(stages[1:]):
        words = instructions[0].argument.split()
        name = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else str(index)
        if stage is not None:
            # The previous stage's filesystem moves aside: only COPY --from reaches it now.
            moved = root.parent / f"{root.name}-stage-{stage.name}"
            shutil.rmtree(moved, ignore_errors=True)
            root.rename(moved)
            done[stage.name] = moved
        root.mkdir(parents=True)
        stage = Stage(name=name, root=root, env={"PATH": machine_env["PATH"]})
        for instruction in instructions[1:]:
            _step(stage, instruction, context, done, machine_env)
    assert stage is not None, "the Dockerfile has no FROM"
    if keep_earlier:
        stage.earlier = done
    else:
        for moved in done.values():
            shutil.rmtree(moved)
    return stage


def _step(
    stage: Stage,
    instruction: Instruction,
    context: Path,
    done: dict[str, Path],
    machine_env: dict[str, str],
) -> None:
    keyword, argument = instruction.keyword, instruction.argument
    if keyword == "ENV":
        stage.env |= _env_pairs(stage, argument)
    elif keyword == "WORKDIR":
        stage.workdir = argument
        Path(stage.map(argument)).mkdir(parents=True, exist_ok=True)
    elif keyword == "COPY":
        words = shlex.split(argument)
        source_root = context
        if words[0].startswith("--from="):
            source_root = done[words.pop(0).removeprefix("--from=")]
        *sources, destination = words
        _copy(stage, source_root, sources, destination)
    elif keyword == "RUN":
        _run(stage, argument, machine_env)
    elif keyword == "ENTRYPOINT":
        stage.entrypoint = instruction.exec_form()
    elif keyword == "CMD":
        stage.cmd = instruction.exec_form()
    elif keyword == "USER":
        stage.user = argument


def _copy(stage: Stage, source_root: Path, sources: list[str], destination: str) -> None:
    base = Path(stage.map(stage.workdir))
    target = Path(stage.map(destination)) if destination.startswith("/") else base / destination
    for source in sources:
        path = source_root / source.lstrip("/")
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True, symlinks=True)
        else:
            into = target / path.name if destination.endswith("/") else target
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, into)


def _run(stage: Stage, command: str, machine_env: dict[str, str]) -> None:
    parts = [part.strip() for part in command.split("&&")]
    kept = []
    for part in parts:
        if shlex.split(part)[0] in NOT_REPLAYED:
            stage.skipped.append(part)
        else:
            kept.append(stage.map(part))
    if not kept:
        return
    result = subprocess.run(
        ["/bin/sh", "-c", " && ".join(kept)],
        cwd=stage.map(stage.workdir),
        env=stage.environ(machine_env),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"RUN {command}\n{result.stdout}\n{result.stderr}"
