"""Upload throughput: the agent's uploader against `aws s3 cp`, same file, same emulator.

    python -m bench.upload_throughput [--size-mib 256] [--runs 3] [--work-dir out/bench-upload]

Both run as whole processes (start-up included) against one moto server in a process of
its own on loopback, alternating, `--runs` times each; the median wall time of each gives
the throughput and the ratio (agent / awscli; above 1 means the agent is faster). awscli
pins a botocore that conflicts with aiobotocore's, so it lives in a throwaway venv under
the work dir, created on first use. Results print as a table and as JSON (also written to
<work-dir>/result.json). Every uploaded object is checked for its size before it counts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
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

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bench-recordings"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Result:
    size_bytes: int
    runs: int
    agent_seconds: list[float]
    awscli_seconds: list[float]
    agent_cpu_seconds: list[float]
    awscli_cpu_seconds: list[float]
    agent_upload_only_seconds: list[float]
    """The agent's own measure, from its log: the upload without interpreter start-up."""
    agent_mib_s: float
    awscli_mib_s: float
    ratio: float
    agent_settings: dict[str, Any]
    awscli_settings: dict[str, Any]
    awscli_version: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the moto server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


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
    import boto3

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
    output: str


def timed(command: list[str], env: dict[str, str]) -> Timing:
    """Wall and CPU seconds of running `command` to its end, and what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, check=True, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu, done.stdout + done.stderr)


_UPLOAD_ONLY = re.compile(r"bytes in ([0-9.]+) s")


def run_agent(endpoint: str, work: Path, source: Path, args: argparse.Namespace, n: int) -> Timing:
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
    command += ["--part-size", f"{args.part_size_mib}MiB", "--concurrency", str(args.concurrency)]
    command += ["--checksum-algorithm", args.checksum_algorithm]
    return timed(command, aws_env(endpoint))


def run_awscli(endpoint: str, aws: Path, source: Path, n: int) -> Timing:
    target = f"s3://{BUCKET}/awscli/{n}.mp4"
    return timed(
        [str(aws), "s3", "cp", "--only-show-errors", str(source), target], aws_env(endpoint)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--part-size-mib", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--checksum-algorithm", choices=["SHA256", "CRC32C"], default="SHA256")
    parser.add_argument("--work-dir", type=Path, default=REPO / "out" / "bench-upload")
    args = parser.parse_args(argv)
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

    agent_times: list[float] = []
    awscli_times: list[float] = []
    agent_cpu: list[float] = []
    awscli_cpu: list[float] = []
    agent_only: list[float] = []
    with moto_server() as endpoint:
        for n in range(args.runs):
            s3 = reset(endpoint)
            timing = run_agent(endpoint, work, source, args, n)
            agent_times.append(timing.wall)
            agent_cpu.append(timing.cpu)
            found = _UPLOAD_ONLY.search(timing.output)
            if found is None:
                raise SystemExit(f"the agent's uploader did not log its upload:\n{timing.output}")
            agent_only.append(float(found[1]))
            check_object(s3, size, "agent/")
            s3 = reset(endpoint)
            timing = run_awscli(endpoint, aws, source, n)
            awscli_times.append(timing.wall)
            awscli_cpu.append(timing.cpu)
            check_object(s3, size, "awscli/")
            print(
                f"run {n + 1}/{args.runs}: agent {agent_times[-1]:.2f} s "
                f"(cpu {agent_cpu[-1]:.2f} s), awscli {awscli_times[-1]:.2f} s "
                f"(cpu {awscli_cpu[-1]:.2f} s)",
                file=sys.stderr,
            )
    agent_rate = size / MiB / statistics.median(agent_times)
    awscli_rate = size / MiB / statistics.median(awscli_times)
    result = Result(
        size_bytes=size,
        runs=args.runs,
        agent_seconds=[round(t, 3) for t in agent_times],
        awscli_seconds=[round(t, 3) for t in awscli_times],
        agent_cpu_seconds=[round(t, 3) for t in agent_cpu],
        awscli_cpu_seconds=[round(t, 3) for t in awscli_cpu],
        agent_upload_only_seconds=[round(t, 3) for t in agent_only],
        agent_mib_s=round(agent_rate, 1),
        awscli_mib_s=round(awscli_rate, 1),
        ratio=round(agent_rate / awscli_rate, 2),
        agent_settings={
            "part_size_mib": args.part_size_mib,
            "concurrency": args.concurrency,
            "checksum": args.checksum_algorithm,
            "verify": "HeadObject",
        },
        awscli_settings={"multipart_chunksize_mib": 8, "max_concurrent_requests": 10},
        awscli_version=version,
    )
    print(f"file: {args.size_mib} MiB, {args.runs} runs each, median wall time per process")
    print(f"  agent uploader: {result.agent_mib_s:8.1f} MiB/s  {result.agent_seconds}")
    print(f"  aws s3 cp:      {result.awscli_mib_s:8.1f} MiB/s  {result.awscli_seconds}")
    print(f"  ratio agent/awscli: {result.ratio:.2f}")
    only = size / MiB / statistics.median(agent_only)
    print(f"  agent, upload only (no interpreter start-up): {only:.1f} MiB/s")
    print(
        f"  client CPU, median: agent {statistics.median(agent_cpu):.2f} s, "
        f"awscli {statistics.median(awscli_cpu):.2f} s"
    )
    text = json.dumps(asdict(result), indent=2)
    (work / "result.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
