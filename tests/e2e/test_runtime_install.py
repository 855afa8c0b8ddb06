"""What ships, tested as it ships: the wheel with its runtime dependencies only, and the image.

Once per test run, the Dockerfile's build and runtime stages are replayed without an engine
(tests/support/dockerfile.py: its own COPY and RUN steps, this machine's Python 3.11 standing in
for the base image's), and the wheel that build made is installed into a fresh virtualenv the
way deploy/jibri/install-agent.sh installs the agent: `pip install` of the wheel, no extras.
Neither install holds a dev package, and neither process sees the checkout: they run from a
directory outside it, without PYTHONPATH. From those installs, against the AWS emulator:
the controller scales a pool; the agent runs with every production option on (fallback,
uploads, Jibri's webhook) against a fake Jibri, with Jibri's finalize script from deploy/jibri;
the image's ENTRYPOINT and CMD run the controller and its HEALTHCHECK passes.

The image's USER (uid 10001) is not taken here: this machine's interpreter lives under a
directory only root may enter.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sandbox.fake_jibri import FakeJibri
from tests.support.aws import Emulator, create_asg
from tests.support.controller import TOKEN, http, pool_yaml, running_controller, wait_for
from tests.support.dockerfile import Instruction, Stage, parse, replay
from tests.support.fake_imds import FakeImds
from tests.support.loopback import eventually, eventually_async

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {"common", "controller", "agent"}
DEV_ONLY = ("pytest", "moto", "boto3", "mypy", "hypothesis", "types_aiobotocore_autoscaling")
GROUP = "jibri-recorders"
BUCKET = "recordings-runtime"


def base_python() -> Path:
    """This machine's interpreter of the image's Python (python:3.11-slim): the one the test
    virtualenv was made from when that is 3.11, else python3.11 on PATH."""
    if sys.version_info[:2] == (3, 11):
        return Path(sys._base_executable)
    found = shutil.which("python3.11")
    assert found, "the image's Python, 3.11, is not on PATH"
    return Path(found)


def clean_env(**extra: str) -> dict[str, str]:
    """This machine's environment without anything that would find the checkout or AWS."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONPATH" and not k.startswith(("AWS_", "JIBRI_", "VIRTUAL_ENV"))
    }
    return {**env, **extra}


@dataclass(frozen=True)
class Image:
    stage: Stage
    wheel: Path

    def env(self, **extra: str) -> dict[str, str]:
        return self.stage.environ(clean_env(**extra))

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            cwd=self.stage.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@dataclass(frozen=True)
class Install:
    venv: Path
    home: Path  # the working directory of the installed programs: not the checkout

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            cwd=self.home,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    """The Dockerfile's stages replayed; the last one's root, and the wheel its build made."""
    work = tmp_path_factory.mktemp("image")
    stage = replay(
        REPO / "Dockerfile",
        REPO,
        work / "root",
        python=base_python(),
        base_env=clean_env(),
        keep_earlier=True,
    )
    (wheel,) = (stage.earlier["build"] / "tmp" / "wheels").glob("*.whl")
    kept = work / "dist" / wheel.name
    kept.parent.mkdir()
    shutil.copy2(wheel, kept)
    for earlier in stage.earlier.values():
        shutil.rmtree(earlier)
    yield Image(stage, kept)


@pytest.fixture(scope="session")
def runtime(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Install:
    """The wheel in a fresh virtualenv with its runtime dependencies only (no extras)."""
    work = tmp_path_factory.mktemp("runtime")
    venv = work / "venv"
    subprocess.run([str(base_python()), "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(image.wheel)],
        check=True,
        timeout=900,
        env=clean_env(),
    )
    home = work / "home"
    home.mkdir()
    return Install(venv, home)


def test_wheel_holds_common_controller_and_agent_only(image: Image) -> None:
    """The wheel the image is built from holds the packages common, controller and agent and
    nothing else (no sandbox, bench or tests)."""
    with zipfile.ZipFile(image.wheel) as wheel:
        tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == SHIPPED


@pytest.mark.parametrize("which", [pytest.param("runtime", id="wheel"), pytest.param("image")])
def test_install_has_runtime_dependencies_only(which: str, request: pytest.FixtureRequest) -> None:
    """Neither the wheel's virtualenv nor the image holds a dev package, and the code they run
    is the installed copy, not the checkout."""
    install: Install | Image = request.getfixturevalue(which)
    python = install.bin("python") if isinstance(install, Install) else "python"
    probe = (
        "import importlib.util, json, controller, agent, common\n"
        f"print(json.dumps({{'dev': [m for m in {DEV_ONLY!r} if importlib.util.find_spec(m)],"
        " 'files': [controller.__file__, agent.__file__, common.__file__]}))"
    )
    result = install.run(python, "-c", probe)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["dev"] == []
    assert all("site-packages" in f and not f.startswith(str(REPO)) for f in found["files"])


def test_every_shipped_module_imports_from_the_wheel(runtime: Install) -> None:
    """Every module of common, controller and agent imports with the runtime dependencies
    alone: an import needed only for typing (type stubs) sits under TYPE_CHECKING."""
    probe = (
        "import importlib, pkgutil\n"
        "for name in ('common', 'controller', 'agent'):\n"
        "    package = importlib.import_module(name)\n"
        "    for module in pkgutil.walk_packages(package.__path__, name + '.'):\n"
        "        if not module.name.endswith('__main__'):\n"
        "            importlib.import_module(module.name)\n"
        "            print(module.name)\n"
    )
    result = runtime.run(runtime.bin("python"), "-c", probe)
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    assert {"controller.planner", "agent.daemon", "common.wire"} <= imported


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("jibri-autoscaler", "run", "--help"), id="jibri-autoscaler"),
        pytest.param(("jibri-agent", "run", "--help"), id="jibri-agent"),
        pytest.param(("python", "-m", "controller", "run", "--help"), id="python-m-controller"),
        pytest.param(("python", "-m", "agent", "run", "--help"), id="python-m-agent"),
    ],
)
def test_clis_start_from_the_wheel(runtime: Install, argv: tuple[str, ...]) -> None:
    """Both daemons' CLIs, as scripts and as modules, start from the wheel's virtualenv."""
    result = runtime.run(runtime.bin(argv[0]), *argv[1:])
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr


@pytest.mark.parametrize("package", ["controller", "agent"])
def test_image_runs_both_clis(image: Image, package: str) -> None:
    """In the image, `python -m controller run --help` and `python -m agent run --help` work
    (the agent is in the image's wheel too)."""
    result = image.run("python", "-m", package, "run", "--help")
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr


def test_image_skips_only_user_administration(image: Image) -> None:
    """The replay ran every RUN step but creating the image's user and group."""
    assert [s.split()[0] for s in image.stage.skipped] == ["groupadd", "useradd"]


def test_installed_controller_scales_a_pool(
    runtime: Install, emulator: Emulator, tmp_path: Path
) -> None:
    """`jibri-autoscaler run` from the wheel keeps a pool's free recorders: with none reporting
    and targetFree 1, it raises the group's desired capacity in the emulator."""
    create_asg(emulator, GROUP, min_size=0, max_size=3, desired=0)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(group=GROUP, low=0, high=3, target_free=1))
    autoscaling = emulator.boto3_client("autoscaling")

    def desired() -> int:
        groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
        return int(groups["AutoScalingGroups"][0]["DesiredCapacity"])

    with running_controller(
        emulator, config, program=(runtime.bin("jibri-autoscaler"),), cwd=runtime.home
    ) as controller:
        wait_for(lambda: desired() >= 1, what="a scale-out")
        assert http("GET", f"{controller.url}/healthz")[0] == 200


def test_image_entrypoint_runs_the_controller(image: Image, emulator: Emulator) -> None:
    """The image's ENTRYPOINT and CMD run the controller on the config mounted at
    /etc/jibri-autoscaler (loopback port 0 instead of 8080), and its HEALTHCHECK passes."""
    create_asg(emulator, GROUP, min_size=0, max_size=2, desired=0)
    stage = image.stage
    mounted = Path(stage.map("/etc/jibri-autoscaler/desired-state.yaml"))
    mounted.write_text(pool_yaml(group=GROUP, low=0, high=2, target_free=0))
    cmd = stage.argv(stage.cmd)
    cmd[cmd.index("--listen") + 1] = "127.0.0.1:0"
    log_path = mounted.with_suffix(".log")
    env = image.env(**emulator.env(), JIBRI_AUTOSCALER_TOKEN=TOKEN)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*stage.argv(stage.entrypoint), *cmd],
            cwd=stage.root,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        address = wait_for(lambda: _listening(process, log_path), what="the controller to listen")
        (check,) = [i for i in parse_runtime() if i.keyword == "HEALTHCHECK"]
        argv = check.exec_form()
        argv[-1] = argv[-1].replace("127.0.0.1:8080", address)
        probe = subprocess.run(
            argv, cwd=stage.root, env=env, capture_output=True, text=True, timeout=30
        )
        assert probe.returncode == 0, probe.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, log_path.read_text()


def parse_runtime() -> list[Instruction]:
    return parse((REPO / "Dockerfile").read_text(encoding="utf-8"))[-1]


def _listening(process: subprocess.Popen[bytes], log_path: Path) -> str | None:
    if process.poll() is not None:
        raise AssertionError(f"the controller exited early:\n{log_path.read_text()}")
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and document.get("event") == "listening":
            return str(document["addresses"][0])
    return None


def finalize_script(runtime: Install, spool: Path, into: Path) -> Path:
    """deploy/jibri/jibri-agent-finalize with its two install paths pointed at this install."""
    text = (REPO / "deploy" / "jibri" / "jibri-agent-finalize").read_text(encoding="utf-8")
    assert "/var/spool/jibri-agent" in text and "/opt/jibri-agent/bin/python" in text
    text = text.replace("/var/spool/jibri-agent", str(spool))
    text = text.replace("/opt/jibri-agent/bin/python", runtime.bin("python"))
    into.write_text(text, encoding="utf-8")
    into.chmod(0o755)
    return into


async def _metric(url: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as answer:
            text = await answer.text()
    except aiohttp.ClientError:
        return None
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


def _jibri_free_points(emulator: Emulator) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    answer = emulator.boto3_client("cloudwatch").get_metric_statistics(
        Namespace="Jibri",
        MetricName="JibriFree",
        Dimensions=[{"Name": "AutoScalingGroupName", "Value": GROUP}],
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["SampleCount"],
    )
    points: list[dict[str, Any]] = answer["Datapoints"]
    return points


async def test_installed_agent_with_every_production_option(
    runtime: Install, emulator: Emulator, tmp_path: Path
) -> None:
    """`jibri-agent run` from the wheel with the fallback, uploads and Jibri's webhook on, next
    to the installed controller: its reports are accepted, Jibri's pushes arrive, a recording
    goes through Jibri's finalize script to a verified S3 object, JibriFree reaches CloudWatch,
    and SIGTERM stops it cleanly."""
    (instance,) = create_asg(emulator, GROUP, min_size=1, max_size=2, desired=1)
    emulator.boto3_client("s3").create_bucket(Bucket=BUCKET)
    config = tmp_path / "pools.yaml"
    config.write_text(pool_yaml(group=GROUP, low=1, high=2, target_free=0, stale_after="30s"))
    spool = tmp_path / "spool"
    script = finalize_script(runtime, spool, tmp_path / "jibri-agent-finalize")
    jibri = FakeJibri(
        jibri_id=instance, finalize_command=[str(script)], recordings_dir=tmp_path / "recordings"
    )
    await jibri.start()
    imds = FakeImds(instance)
    await imds.start()
    ready = tmp_path / "agent.ready.json"
    log_path = tmp_path / "agent.log"
    try:
        with running_controller(
            emulator, config, program=(runtime.bin("jibri-autoscaler"),), cwd=runtime.home
        ) as controller:
            flags = {
                "--controller": controller.url,
                "--instance-id": instance,
                "--imds-url": imds.url,
                "--region": "us-east-1",
                "--jibri-health-url": jibri.health_url,
                "--jibri-shutdown-url": jibri.shutdown_url,
                "--webhook-listen": "127.0.0.1:0",
                "--metrics-listen": "127.0.0.1:0",
                "--ready-file": str(ready),
                "--state-dir": str(tmp_path / "state"),
                "--spool-dir": str(spool),
                "--report-interval": "1s",
                "--poll-interval": "0.5s",
                "--fallback-period": "1s",
                "--upload-bucket": BUCKET,
            }
            argv = [part for flag in flags.items() for part in flag]
            env = clean_env(**emulator.env(), JIBRI_AUTOSCALER_TOKEN=TOKEN)
            with log_path.open("wb") as log_file:
                agent = await asyncio.create_subprocess_exec(
                    runtime.bin("jibri-agent"),
                    "run",
                    *argv,
                    "--fallback",
                    cwd=runtime.home,
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            try:
                await eventually(
                    lambda: ready.exists() or agent.returncode is not None,
                    within=60,
                    what="the agent's ready file",
                )
                assert agent.returncode is None, log_path.read_text()
                listening = json.loads(ready.read_text())
                metrics = "http://" + listening["metrics"][0]
                jibri.subscribe("http://" + listening["webhook"][0])
                await eventually_async(
                    lambda: _metric(metrics, "jibri_agent_reports_total", outcome="ok"),
                    what="a report the installed controller accepted",
                )
                await jibri.start_recording("runtime-install", duration=1)
                await eventually_async(
                    lambda: _metric(metrics, "jibri_agent_webhook_events_total", outcome="ok"),
                    what="Jibri's status push",
                )
                s3 = emulator.boto3_client("s3")
                await eventually(
                    lambda: bool(s3.list_objects_v2(Bucket=BUCKET).get("KeyCount")),
                    within=60,
                    what="the recording in S3",
                )
                await eventually_async(
                    lambda: _metric(metrics, "jibri_agent_uploads_total", outcome="success"),
                    what="the upload verified",
                )
                await eventually(
                    lambda: bool(_jibri_free_points(emulator)), within=30, what="JibriFree"
                )
            finally:
                if agent.returncode is None:
                    agent.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(agent.wait(), 30)
    finally:
        await jibri.close()
        await imds.close()
    assert code == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()
