"""Recordings from Jibri's finalize hook to verified S3 objects, against the AWS emulator.

The uploader runs as a real process (killed with SIGKILL mid-upload in one test), and a
loopback TCP proxy in front of the emulator slows uploads down and cuts the network.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import crc32c
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.spool import STATE_NAME, Spool, parse_entry_name
from agent.upload.checksums import ChecksumAlgorithm, checksum
from agent.upload.s3client import open_s3
from sandbox.fake_jibri import FakeJibri
from tests.support.aws import Emulator
from tests.support.fake_controller import FakeController
from tests.support.fake_imds import FakeImds
from tests.support.loopback import eventually, serving
from tests.support.tcp_proxy import TcpProxy, running_proxy

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BUCKET = "recordings-e2e"
MiB = 1024 * 1024
MEETING_URL = "https://meet.example.com/Weekly Sync Ünïcode"


def wait_for(check: Callable[[], Any], *, within: float = 120, what: str) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(0.05)
    return result


def make_recording(parent: Path, session: str, big: int) -> Path:
    directory = parent / session
    directory.mkdir(parents=True)
    with open(directory / f"{session}.mp4", "wb") as f:
        for _ in range(big // MiB):
            f.write(os.urandom(MiB))
        f.write(os.urandom(big % MiB))
    (directory / "chat.txt").write_text("hello\n")
    (directory / "metadata.json").write_text(
        json.dumps({"meeting_url": MEETING_URL, "participants": []})
    )
    return directory


def digests(directory: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.startswith(".jibri-agent"):
            out[path.name] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def finalize(recording: Path, spool: Path) -> Path:
    """Run Jibri's hook as Jibri would; print how long it took; return the spool entry."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "agent", "finalize", str(recording), "--spool-dir", str(spool)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    print(f"\nfinalize via `python -m agent finalize`: {elapsed * 1000:.0f} ms (whole process)")
    [entry] = Spool(spool).pending()
    return entry


def uploader(
    emulator: Emulator, endpoint: str, spool: Path, *extra: str, once: bool = True
) -> subprocess.Popen[str]:
    env = {**os.environ, **emulator.env(), "AWS_ENDPOINT_URL": endpoint, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "agent.upload.main", "--spool-dir", str(spool)]
    command += ["--bucket", BUCKET, "--part-size", "5MiB", *extra]
    return subprocess.Popen(
        [*command, *(["--once"] if once else [])],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def s3(emulator: Emulator) -> Any:
    client = emulator.boto3_client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def proxy(emulator: Emulator) -> Iterator[TcpProxy]:
    with running_proxy(emulator.endpoint) as proxy:
        yield proxy


def composite_sha256(path: Path, part_size: int) -> str:
    digests_ = []
    with open(path, "rb") as f:
        while chunk := f.read(part_size):
            digests_.append(hashlib.sha256(chunk).digest())
    return base64.b64encode(hashlib.sha256(b"".join(digests_)).digest()).decode()


def assert_uploaded(
    s3: Any,
    entry_name: str,
    expected: dict[str, tuple[int, str]],
    algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC32C,
) -> None:
    """Every file is in S3 under its key, byte for byte, with checksum and metadata."""
    at, session = parse_entry_name(entry_name)  # type: ignore[misc]
    prefix = f"recordings/{at:%Y/%m/%d}/{session}/"
    listed = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(prefix + name for name in expected)
    for name, (size, digest) in expected.items():
        key = prefix + name
        head = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        assert head["ContentLength"] == size
        assert head[algorithm.field]
        assert head["Metadata"] == {
            "jibri-session": session,
            "meeting-url": "https://meet.example.com/Weekly Sync %C3%9Cn%C3%AFcode",
        }
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest, f"{key} differs from the recording"
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_finalize_then_upload(tmp_path: Path, emulator: Emulator, s3: Any) -> None:
    """Finalize hands over at once; the uploader puts every file in S3 (the large one in
    several parts, SHA256 composite checksum verified) and deletes the recording only
    afterwards."""
    recording = make_recording(tmp_path / "recordings", "sess-e2e", 52 * MiB + 17)
    expected = digests(recording)
    big = recording / "sess-e2e.mp4"
    composite = composite_sha256(big, 5 * MiB)
    entry = finalize(recording, tmp_path / "spool")
    assert not recording.exists() and digests(entry) == expected

    process = uploader(
        emulator, emulator.endpoint, tmp_path / "spool", "--checksum-algorithm", "SHA256"
    )
    deleted_before_complete = []
    while process.poll() is None:
        if not entry.exists():
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
            deleted_before_complete.append(len(keys) < len(expected))
        time.sleep(0.02)
    output = process.stdout.read() if process.stdout else ""
    assert process.returncode == 0, output
    assert not any(deleted_before_complete), "the recording was deleted before it was in S3"
    assert not entry.exists() and Spool(tmp_path / "spool").pending_count() == 0
    assert_uploaded(s3, entry.name, expected, ChecksumAlgorithm.SHA256)
    at, session = parse_entry_name(entry.name)  # type: ignore[misc]
    key = f"recordings/{at:%Y/%m/%d}/{session}/sess-e2e.mp4"
    head = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-11"), "the large file went in 11 parts"
    assert head["ChecksumSHA256"].split("-")[0] == composite


def test_sigkill_mid_upload_then_resume(
    tmp_path: Path, emulator: Emulator, s3: Any, proxy: TcpProxy
) -> None:
    """An uploader killed with SIGKILL mid-upload resumes the same multipart upload on
    restart: the object ends complete and correct, with no duplicate and no leftover upload."""
    recording = make_recording(tmp_path / "recordings", "sess-kill", 60 * MiB)
    expected = digests(recording)
    entry = finalize(recording, tmp_path / "spool")
    proxy.rate = 20 * MiB
    first = uploader(emulator, proxy.url, tmp_path / "spool", "--concurrency", "2")

    def parts_saved() -> int:
        try:
            state = json.loads((entry / STATE_NAME).read_text())
        except (OSError, ValueError):
            return 0
        return sum(len(f["parts"]) for f in state["files"].values())

    wait_for(lambda: parts_saved() >= 3 or first.poll() is not None, what="three parts")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, "the upload finished before it could be killed"
    saved = parts_saved()
    [upload] = s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"]
    assert upload["Key"].endswith("/sess-kill/sess-kill.mp4")

    proxy.rate = None
    second = uploader(emulator, proxy.url, tmp_path / "spool")
    output, _ = second.communicate(timeout=240)
    assert second.returncode == 0, output
    assert f"resuming multipart upload of {upload['Key']}" in output
    assert f"{saved} parts already in S3" in output, output
    assert not entry.exists()
    assert_uploaded(s3, entry.name, expected)


def test_s3_cut_off_mid_upload_then_back(
    tmp_path: Path, emulator: Emulator, s3: Any, proxy: TcpProxy
) -> None:
    """With the S3 endpoint unreachable mid-upload the recording stays pending and the
    uploader keeps retrying; once S3 is back the upload completes."""
    recording = make_recording(tmp_path / "recordings", "sess-cut", 50 * MiB)
    expected = digests(recording)
    entry = finalize(recording, tmp_path / "spool")
    spool = Spool(tmp_path / "spool")
    proxy.rate = 20 * MiB
    process = uploader(emulator, proxy.url, tmp_path / "spool", once=False)
    try:
        wait_for(lambda: (entry / STATE_NAME).exists(), what="the upload to start")
        time.sleep(0.3)
        proxy.cut()
        connections = proxy.connections
        cut_at = time.monotonic()
        while time.monotonic() - cut_at < 5:
            assert spool.pending_count() == 1 and entry.exists()
            assert process.poll() is None, "the uploader gave up"
            time.sleep(0.1)
        proxy.rate = None
        proxy.restore()
        wait_for(lambda: not entry.exists(), what="the upload to finish once S3 is back")
        assert proxy.connections > connections
        assert spool.pending_count() == 0
        assert_uploaded(s3, entry.name, expected)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "retrying with backoff" in output and "S3 answers again" in output


async def test_the_agent_reports_pending_uploads_and_holds_the_drain(
    tmp_path: Path, emulator: Emulator, s3: Any, proxy: TcpProxy
) -> None:
    """The whole agent, uploading through a cut network: it reports pendingUploads and stays
    draining but not drained until S3 is back and the recording is uploaded."""
    recording = make_recording(tmp_path / "recordings", "sess-agent", 40 * MiB)
    expected = digests(recording)
    entry = finalize(recording, tmp_path / "spool")
    jibri = FakeJibri()
    await jibri.start()
    controller = FakeController()
    proxy.rate = 20 * MiB
    env = {**os.environ, **emulator.env(), "AWS_ENDPOINT_URL": proxy.url}
    env |= {"JIBRI_AUTOSCALER_TOKEN": controller.token, "PYTHONPATH": str(REPO)}
    imds = FakeImds("i-0123456789abcdef0")
    try:
        async with serving(controller.app()) as controller_url, serving(imds.app()) as imds_url:
            ready = tmp_path / "agent.ready.json"
            flags = {
                "--controller": controller_url,
                "--instance-id": "i-0123456789abcdef0",
                "--imds-url": imds_url,
                "--region": "us-east-1",
                "--jibri-health-url": jibri.health_url,
                "--jibri-shutdown-url": jibri.shutdown_url,
                "--webhook-listen": "127.0.0.1:0",
                "--metrics-listen": "127.0.0.1:0",
                "--ready-file": str(ready),
                "--state-dir": str(tmp_path / "state"),
                "--spool-dir": str(tmp_path / "spool"),
                "--report-interval": "1s",
                "--poll-interval": "0.2s",
                "--upload-bucket": BUCKET,
                "--upload-part-size": "5MiB",
            }
            agent = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent",
                "run",
                *(part for flag in flags.items() for part in flag),
                cwd=REPO,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                # The agent binds port 0 and writes where it listens to its ready file.
                await eventually(ready.exists, within=60, what="the agent's ready file")
                metrics_address = json.loads(ready.read_text())["metrics"][0]
                await eventually(lambda: (entry / STATE_NAME).exists(), within=60, what="upload")
                proxy.cut()
                cut_reports = len(controller.reports)
                controller.drain = True
                await eventually(jibri.exited.is_set, within=60, what="Jibri's graceful exit")
                await eventually(
                    lambda: len(controller.reports) > cut_reports + 3, within=60, what="reports"
                )
                held = controller.reports[cut_reports:]
                assert all(r.pendingUploads == 1 and not r.drained for r in held)
                assert held[-1].draining
                proxy.rate = None
                proxy.restore()
                await eventually(
                    lambda: controller.reports[-1].drained, within=120, what="drained after upload"
                )
                assert controller.reports[-1].pendingUploads == 0
                assert not entry.exists()
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://{metrics_address}/metrics") as response,
                ):
                    metrics = await response.text()
                samples = {
                    sample.name + str(sorted(sample.labels.items())): sample.value
                    for family in text_string_to_metric_families(metrics)
                    for sample in family.samples
                }
                assert samples["jibri_agent_uploads_total[('outcome', 'success')]"] == 1
                assert samples["jibri_agent_spool_recordings[]"] == 0
                uploaded = samples["jibri_agent_upload_bytes_total[]"]
                assert uploaded == sum(size for size, _ in expected.values())
            finally:
                agent.send_signal(signal.SIGTERM)
                raw, _ = await asyncio.wait_for(agent.communicate(), 30)
    finally:
        await jibri.close()
    output = raw.decode()
    assert agent.returncode == 0, output
    assert "task uploader" not in output, output
    assert_uploaded(s3, entry.name, expected)


def test_crc32c_checksums_verify_against_the_emulator(
    tmp_path: Path, emulator: Emulator, s3: Any
) -> None:
    """By default, parts and objects carry CRC32C checksums that S3 reports back."""
    recording = make_recording(tmp_path / "recordings", "sess-crc", 12 * MiB)
    expected = digests(recording)
    entry = finalize(recording, tmp_path / "spool")
    process = uploader(emulator, emulator.endpoint, tmp_path / "spool")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    at, session = parse_entry_name(entry.name)  # type: ignore[misc]
    key = f"recordings/{at:%Y/%m/%d}/{session}/sess-crc.mp4"
    head = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    parts = []
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    for offset in range(0, len(body), 5 * MiB):
        parts.append(crc32c.crc32c(body[offset : offset + 5 * MiB]).to_bytes(4, "big"))
    whole = base64.b64encode(crc32c.crc32c(b"".join(parts)).to_bytes(4, "big")).decode()
    assert head["ChecksumCRC32C"].split("-")[0] == whole
    assert hashlib.sha256(body).hexdigest() == expected["sess-crc.mp4"][1]


def test_full_object_crc32c_verifies_against_the_emulator(
    tmp_path: Path, emulator: Emulator, s3: Any
) -> None:
    """With --checksum-type FULL_OBJECT the multipart object carries the CRC32C of its whole
    body, which S3 reports back and the uploader verified."""
    recording = make_recording(tmp_path / "recordings", "sess-crc", 12 * MiB)
    expected = digests(recording)
    entry = finalize(recording, tmp_path / "spool")
    process = uploader(
        emulator, emulator.endpoint, tmp_path / "spool", "--checksum-type", "FULL_OBJECT"
    )
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    at, session = parse_entry_name(entry.name)  # type: ignore[misc]
    key = f"recordings/{at:%Y/%m/%d}/{session}/sess-crc.mp4"
    head = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    whole = base64.b64encode(crc32c.crc32c(body).to_bytes(4, "big")).decode()
    assert head["ChecksumCRC32C"] == whole and head["ChecksumType"] == "FULL_OBJECT"
    assert head["ETag"].strip('"').endswith("-3"), "the file went in 3 parts"
    parts = s3.get_object_attributes(
        Bucket=BUCKET, Key=key, ObjectAttributes=["ObjectParts", "Checksum"]
    )
    assert parts["Checksum"]["ChecksumType"] == "FULL_OBJECT"
    assert hashlib.sha256(body).hexdigest() == expected["sess-crc.mp4"][1]


def test_a_missing_bucket_sends_the_recording_to_failed(tmp_path: Path, emulator: Emulator) -> None:
    """NoSuchBucket is permanent: the recording moves to failed/ intact, and stays pending."""
    recording = make_recording(tmp_path / "recordings", "sess-nobucket", 1 * MiB)
    expected = digests(recording)
    entry = finalize(recording, tmp_path / "spool")
    process = uploader(emulator, emulator.endpoint, tmp_path / "spool")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output
    assert "NoSuchBucket" in output and "kept at" in output
    spool = Spool(tmp_path / "spool")
    [failed] = spool.failed_entries()
    assert failed.name == entry.name and digests(failed) == expected
    assert spool.pending_count() == 1


@pytest.mark.parametrize("algorithm", [pytest.param(a, id=a.value) for a in ChecksumAlgorithm])
async def test_the_body_checksum_is_signed_instead_of_the_payload(
    emulator: Emulator, s3: Any, monkeypatch: pytest.MonkeyPatch, algorithm: ChecksumAlgorithm
) -> None:
    """Bodies are not hashed twice: the payload goes unsigned, but its checksum header is
    signed, so S3 still rejects a body changed on the way."""
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    seen: list[dict[str, str]] = []
    body = b"recording bytes"
    async with open_s3(BUCKET, algorithm) as client:
        client._client.meta.events.register(
            "before-send.s3.PutObject",
            lambda request, **_: seen.append(
                {
                    k.lower(): v.decode() if isinstance(v, bytes) else v
                    for k, v in request.headers.items()
                }
            ),
        )
        await client.put_object(
            key="k",
            body=io.BytesIO(body),
            checksum=checksum(algorithm, body),
            content_type="video/mp4",
            metadata={},
        )
    [headers] = seen
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert f"x-amz-checksum-{algorithm.value.lower()}" in signed
    assert not [h for h in headers if h.startswith("x-amz-checksum-") and h not in signed]
    assert "content-md5" not in headers, "botocore hashed the body again"
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == body
