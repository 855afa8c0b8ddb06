"""Upload throughput: the agent's uploader against `aws s3 cp`, same file, same emulator.

    python -m bench.upload_throughput [--size-mib 256] [--runs 5] [--work-dir out/bench-upload]

Both run as whole processes (start-up included) against one moto server in a process of
its own on loopback, strictly alternating (agent, awscli, agent, awscli, …) `--runs` times
each, so a slow spell on a shared machine hits both alike. Each pair gives a ratio
(awscli seconds / agent seconds; above 1 means the agent is faster); the result is the
median ratio with its spread (min, max), the median throughput of each, their CPU time, and
the emulator's CPU time per upload. The agent runs with its shipped defaults unless
`--part-size-mib`, `--concurrency`, `--checksum-algorithm` or `--checksum-type` say
otherwise. awscli pins a botocore that conflicts with aiobotocore's, so it lives in a
throwaway venv under the work dir, created on first use. Every uploaded object is checked
for its size before it counts. Results print as a table and as JSON (also written to
<work-dir>/result.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bench-recordings"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Spread:
    median: float
    min: float
    max: float

    @staticmethod
    def of(values: list[float], digits: int = 2) -> Spread:
        return Spread(
            round(statistics.median(values), digits),
            round(min(values), digits),
            round(max(values), digits),
        )

    def __str__(self) -> str:
        return f"{self.median} (min {self.min}, max {self.max})"


@dataclass(frozen=True)
class Result:
    size_bytes: int
    runs: int
    ratio: Spread
    """Per alternating pair: awscli wall seconds / agent wall seconds."""
    agent_mib_s: Spread
    awscli_mib_s: Spread
    agent_seconds: list[float]
    awscli_seconds: list[float]
    agent_cpu_seconds: list[float]
    awscli_cpu_seconds: list[float]
    emulator_cpu_seconds_agent: list[float]
    emulator_cpu_seconds_awscli: list[float]
    agent_upload_only_seconds: list[float]
    """The agent's own measure, from its log: the upload without interpreter start-up."""
    agent_settings: dict[str, Any]
    awscli_settings: dict[str, Any]
    awscli_version: str


def serve_emulator() -> int:
    """Run moto on a port the kernel picks, print its URL, serve until stdin closes."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()
    server.stop()
    return 0


@contextmanager
def moto_server() -> Iterator[tuple[str, psutil.Process]]:
    """The emulator in a process of its own (bound to port 0; it prints where it listens)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.upload_throughput", "--serve-emulator"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        endpoint = server.stdout.readline().strip()
        if not endpoint.startswith("http://"):
            raise SystemExit("the moto server did not start")
        yield endpoint, psutil.Process(server.pid)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": str(REPO),
    }


def awscli(work: Path) -> Path:
    """The `aws` of a venv of its own under `work`, installed on first use."""
    venv = work / ".venv-awscli"
    aws = venv / "bin" / "aws"
    if not aws.exists():
        print(f"installing awscli into {venv} …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "awscli"], check=True)
    return aws


def reset(endpoint: str) -> Any:
    import boto3  # type: ignore[import-untyped]

    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=30).close()
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    s3.create_bucket(Bucket=BUCKET)
    return s3


def check_object(s3: Any, size: int, prefix: str) -> None:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    sizes = [o["Size"] for o in listed if o["Key"].endswith(".mp4")]
    if sizes != [size]:
        raise SystemExit(f"upload under {prefix} is wrong: objects of sizes {sizes}")


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float
    """User + system CPU seconds of the process: steadier than wall time on a busy host."""
    server_cpu: float
    """The emulator's CPU seconds meanwhile."""
    output: str


def timed(command: list[str], env: dict[str, str], server: psutil.Process) -> Timing:
    """Wall and CPU seconds of running `command` to its end, and what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = sum(server.cpu_times()[:2])
    started = time.perf_counter()
    done = subprocess.run(command, check=True, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    server_cpu = sum(server.cpu_times()[:2]) - server_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu, server_cpu, done.stdout + done.stderr)


_UPLOAD_ONLY = re.compile(r"bytes in ([0-9.]+) s")


def agent_flags(args: argparse.Namespace) -> list[str]:
    flags = []
    if args.part_size_mib is not None:
        flags += ["--part-size", f"{args.part_size_mib}MiB"]
    if args.concurrency is not None:
        flags += ["--concurrency", str(args.concurrency)]
    if args.checksum_algorithm is not None:
        flags += ["--checksum-algorithm", args.checksum_algorithm]
    if args.checksum_type is not None:
        flags += ["--checksum-type", args.checksum_type]
    return flags


def run_agent(
    endpoint: str,
    server: psutil.Process,
    work: Path,
    source: Path,
    args: argparse.Namespace,
    n: int,
) -> Timing:
    """Hand a hard link of `source` to a fresh spool and time `upload_main --once`."""
    spool = work / "spool"
    shutil.rmtree(spool, ignore_errors=True)
    recording = work / "recordings" / f"bench-{n}"
    shutil.rmtree(recording, ignore_errors=True)
    recording.mkdir(parents=True)
    os.link(source, recording / "bench.mp4")
    subprocess.run(
        [sys.executable, "-m", "agent.finalize", str(recording), "--spool-dir", str(spool)],
        check=True,
        capture_output=True,
        cwd=REPO,
        env=aws_env(endpoint),
    )
    command = [sys.executable, "-m", "agent.upload.main", "--once", "--spool-dir", str(spool)]
    command += ["--bucket", BUCKET, "--prefix", "agent", "--log-level", "info"]
    return timed(command + agent_flags(args), aws_env(endpoint), server)


def run_awscli(endpoint: str, server: psutil.Process, aws: Path, source: Path, n: int) -> Timing:
    target = f"s3://{BUCKET}/awscli/{n}.mp4"
    command = [str(aws), "s3", "cp", "--only-show-errors", str(source), target]
    return timed(command, aws_env(endpoint), server)


def agent_defaults(args: argparse.Namespace) -> dict[str, Any]:
    from agent.upload.config import (
        DEFAULT_CHECKSUM,
        DEFAULT_CHECKSUM_TYPE,
        DEFAULT_CONCURRENCY,
        DEFAULT_PART_SIZE,
    )

    return {
        "part_size_mib": args.part_size_mib or DEFAULT_PART_SIZE // MiB,
        "concurrency": args.concurrency or DEFAULT_CONCURRENCY,
        "checksum": args.checksum_algorithm or DEFAULT_CHECKSUM.value,
        "checksum_type": args.checksum_type or DEFAULT_CHECKSUM_TYPE.value,
        "verify": "HeadObject (size and checksum) before the local file is deleted",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--part-size-mib", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--checksum-algorithm", choices=["SHA256", "CRC32C"], default=None)
    parser.add_argument("--checksum-type", choices=["COMPOSITE", "FULL_OBJECT"], default=None)
    parser.add_argument("--work-dir", type=Path, default=REPO / "out" / "bench-upload")
    parser.add_argument("--serve-emulator", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_emulator:
        return serve_emulator()
    work: Path = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    aws = awscli(work)
    version = (
        subprocess.run(
            [str(aws), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        or "unknown"
    )
    size = args.size_mib * MiB
    source = work / "bench.mp4"
    if not source.exists() or source.stat().st_size != size:
        with open(source, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(MiB))

    agent: list[Timing] = []
    cli: list[Timing] = []
    agent_only: list[float] = []
    with moto_server() as (endpoint, server):
        for n in range(args.runs):
            s3 = reset(endpoint)
            timing = run_agent(endpoint, server, work, source, args, n)
            found = _UPLOAD_ONLY.search(timing.output)
            if found is None:
                raise SystemExit(f"the agent's uploader did not log its upload:\n{timing.output}")
            agent.append(timing)
            agent_only.append(float(found[1]))
            check_object(s3, size, "agent/")
            s3 = reset(endpoint)
            cli.append(run_awscli(endpoint, server, aws, source, n))
            check_object(s3, size, "awscli/")
            print(
                f"run {n + 1}/{args.runs}: agent {agent[-1].wall:.2f} s "
                f"(cpu {agent[-1].cpu:.2f} s, emulator {agent[-1].server_cpu:.2f} s), "
                f"awscli {cli[-1].wall:.2f} s "
                f"(cpu {cli[-1].cpu:.2f} s, emulator {cli[-1].server_cpu:.2f} s)",
                file=sys.stderr,
            )
    mib = size / MiB
    result = Result(
        size_bytes=size,
        runs=args.runs,
        ratio=Spread.of([c.wall / a.wall for a, c in zip(agent, cli, strict=True)]),
        agent_mib_s=Spread.of([mib / a.wall for a in agent], 1),
        awscli_mib_s=Spread.of([mib / c.wall for c in cli], 1),
        agent_seconds=[round(a.wall, 3) for a in agent],
        awscli_seconds=[round(c.wall, 3) for c in cli],
        agent_cpu_seconds=[round(a.cpu, 3) for a in agent],
        awscli_cpu_seconds=[round(c.cpu, 3) for c in cli],
        emulator_cpu_seconds_agent=[round(a.server_cpu, 3) for a in agent],
        emulator_cpu_seconds_awscli=[round(c.server_cpu, 3) for c in cli],
        agent_upload_only_seconds=[round(t, 3) for t in agent_only],
        agent_settings=agent_defaults(args),
        awscli_settings={"multipart_chunksize_mib": 8, "max_concurrent_requests": 10},
        awscli_version=version,
    )
    median = statistics.median
    print(f"file: {args.size_mib} MiB, {args.runs} alternating runs each, whole processes")
    print(f"  agent uploader MiB/s: {result.agent_mib_s}  seconds {result.agent_seconds}")
    print(f"  aws s3 cp MiB/s:      {result.awscli_mib_s}  seconds {result.awscli_seconds}")
    print(f"  ratio agent/awscli per pair: {result.ratio}")
    print(f"  agent, upload only (no interpreter start-up): {mib / median(agent_only):.1f} MiB/s")
    print(
        f"  CPU seconds, median: agent {median(result.agent_cpu_seconds):.2f}, "
        f"awscli {median(result.awscli_cpu_seconds):.2f}; emulator serving the agent "
        f"{median(result.emulator_cpu_seconds_agent):.2f}, "
        f"serving awscli {median(result.emulator_cpu_seconds_awscli):.2f}"
    )
    text = json.dumps(asdict(result), indent=2)
    (work / "result.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
