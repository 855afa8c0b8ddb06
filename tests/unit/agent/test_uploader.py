from __future__ import annotations

import asyncio
import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from prometheus_client import CollectorRegistry

from agent.settings import Settings, SettingsError, load_settings
from agent.spool import FAILURE_NAME, MARKER_NAME, EntryInfo, Spool, entry_name
from agent.upload.checksums import (
    ChecksumAlgorithm,
    ChecksumType,
    checksum,
    composite,
    crc32c_combine,
    object_checksum,
    same_checksum,
)
from agent.upload.config import MiB, UploadConfig
from agent.upload.keys import KeyTemplate, KeyTemplateError, key_segment, metadata_value
from agent.upload.metrics import UploadMetrics
from agent.upload.s3client import (
    CompletedPart,
    NoSuchUploadError,
    PermanentS3Error,
    TransientS3Error,
    classify,
)
from agent.upload.state import FileRecord, PartRecord, StateStore
from agent.upload.uploader import Uploader, recording_files
from tests.support.fake_s3 import FakeS3, denied

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
SESSION = "sess-1"
PART = 5 * MiB


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def spooled(spool: Spool, files: dict[str, bytes], *, session: str = SESSION) -> Path:
    spool.ensure()
    entry = spool.incoming / entry_name(session, T0)
    entry.mkdir()
    for name, body in files.items():
        (entry / name).parent.mkdir(parents=True, exist_ok=True)
        (entry / name).write_bytes(body)
    (entry / MARKER_NAME).write_text(EntryInfo(session, T0).to_json())
    return entry


class Rig:
    def __init__(self, tmp_path: Path, instance_id: str | None = None, **config: object) -> None:
        self.spool = Spool(tmp_path / "spool")
        self.config = UploadConfig(**{"bucket": "recordings", "part_size": PART, **config})  # type: ignore[arg-type]
        self.s3 = FakeS3(self.config.checksum_algorithm)
        self.registry = CollectorRegistry()
        self.metrics = UploadMetrics(self.registry, self.spool, lambda: T0 + timedelta(minutes=1))
        self.uploader = self.make(instance_id)

    def make(self, instance_id: str | None = None) -> Uploader:
        return Uploader(
            spool=self.spool,
            s3=self.s3,
            config=self.config,
            metrics=self.metrics,
            instance_id=instance_id,
            clock=lambda: T0,
            sleep=no_sleep,
        )

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def key(file: str, session: str = SESSION) -> str:
    return f"recordings/2025/01/02/{session}/{file}"


# ---- keys, metadata, checksums, error kinds, config -------------------------------------


@pytest.mark.parametrize(
    ("template", "prefix", "expected"),
    [
        pytest.param(
            "{prefix}/{yyyy}/{mm}/{dd}/{session}/{file}",
            "rec",
            "rec/2025/01/02/s/f.mp4",
            id="default",
        ),
        pytest.param(
            "{prefix}/{yyyy}/{mm}/{dd}/{session}/{file}",
            "",
            "2025/01/02/s/f.mp4",
            id="empty-prefix",
        ),
        pytest.param("{prefix}/{session}/{file}", "/a/b/", "a/b/s/f.mp4", id="slashes-in-prefix"),
        pytest.param(
            "{instance}/{hh}/{session}-{file}", "", "i-1/03/s-f.mp4", id="instance-and-hour"
        ),
    ],
)
def test_key_template_renders(template: str, prefix: str, expected: str) -> None:
    """Keys come from the template with the enqueue date in UTC and no empty segments."""
    keys = KeyTemplate(template, prefix, instance="i-1")
    assert keys.render(session="s", file="f.mp4", enqueued_at=T0) == expected


@pytest.mark.parametrize(
    ("template", "instance", "message"),
    [
        pytest.param("{prefix}/{sesion}/{file}", None, "unknown field {sesion}", id="typo"),
        pytest.param("{prefix}/{file}", None, "must contain {session}", id="no-session"),
        pytest.param("{prefix}/{session}", None, "must contain {file}", id="no-file"),
        pytest.param("{session}/{file!r}", None, "unknown field", id="conversion"),
        pytest.param("{session}/{file", None, "expected '}'", id="unbalanced"),
        pytest.param(
            "{instance}/{session}/{file}", None, "instance id is unknown", id="no-instance"
        ),
    ],
)
def test_bad_key_templates_are_refused(template: str, instance: str | None, message: str) -> None:
    """A key template that could collide or cannot render is refused with the reason."""
    with pytest.raises(KeyTemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        KeyTemplate(template, "p", instance)


@pytest.mark.parametrize(
    ("template", "owned"),
    [
        pytest.param("{prefix}/{yyyy}/{mm}/{dd}/{session}/{file}", None, id="shared"),
        pytest.param("{prefix}/{instance}/{yyyy}/{session}/{file}", "rec/i-9/", id="per-instance"),
        pytest.param("{prefix}/{yyyy}/{instance}/{session}/{file}", None, id="instance-too-late"),
    ],
)
def test_owned_prefix_only_when_the_instance_leads(template: str, owned: str | None) -> None:
    """Only a prefix that holds the instance id is swept wholesale for orphans."""
    assert KeyTemplate(template, "rec", "i-9").owned_prefix() == owned


def test_key_segment_keeps_keys_valid_utf8() -> None:
    """Undecodable bytes and control characters in file names are percent-encoded."""
    assert key_segment(os.fsdecode(b"a\xffb")) == "a%FFb"
    assert key_segment("tab\there") == "tab%09here"
    assert key_segment("Ünïcode ok.mp4") == "Ünïcode ok.mp4"


def test_metadata_value_is_printable_ascii() -> None:
    """Meeting URLs become printable ASCII metadata, bounded in length."""
    assert metadata_value(" https://m/Ünï 100%\tx\n") == "https://m/%C3%9Cn%C3%AF 100%25%09x"
    assert len(metadata_value("x" * 5000)) == 1024


def test_crc32c_is_the_castagnoli_crc() -> None:
    """CRC32C matches the RFC 3720 check value."""
    assert checksum(ChecksumAlgorithm.CRC32C, b"123456789") == "4waSgw=="


def test_composite_checksum_and_comparison() -> None:
    """A composite checksum matches with or without the part-count suffix, not with another."""
    parts = [checksum(ChecksumAlgorithm.SHA256, b) for b in (b"a", b"b")]
    whole = composite(ChecksumAlgorithm.SHA256, parts)
    assert whole.endswith("-2")
    assert same_checksum(whole, whole) and same_checksum(whole, whole.split("-")[0])
    assert not same_checksum(whole, whole.split("-")[0] + "-3")
    assert not same_checksum(whole, composite(ChecksumAlgorithm.SHA256, parts[::-1]))


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},  # type: ignore[typeddict-item]
        "PutObject",
    )


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        pytest.param(_client_error("AccessDenied", 403), PermanentS3Error, id="access-denied"),
        pytest.param(_client_error("NoSuchBucket", 404), PermanentS3Error, id="no-such-bucket"),
        pytest.param(_client_error("InvalidAccessKeyId", 403), PermanentS3Error, id="bad-key"),
        pytest.param(_client_error("SomethingNew", 400), PermanentS3Error, id="unknown-4xx"),
        pytest.param(_client_error("NoSuchUpload", 404), NoSuchUploadError, id="no-such-upload"),
        pytest.param(_client_error("SlowDown", 503), TransientS3Error, id="throttled"),
        pytest.param(_client_error("InternalError", 500), TransientS3Error, id="5xx"),
        pytest.param(_client_error("RequestTimeout", 400), TransientS3Error, id="request-timeout"),
        pytest.param(_client_error("ExpiredToken", 400), TransientS3Error, id="expired-token"),
        pytest.param(
            EndpointConnectionError(endpoint_url="http://x"), TransientS3Error, id="refused"
        ),
        pytest.param(ReadTimeoutError(endpoint_url="http://x"), TransientS3Error, id="timeout"),
    ],
)
def test_errors_are_sorted_into_kinds(error: Exception, kind: type) -> None:
    """Network trouble, 5xx and throttling are transient; auth and bucket errors are permanent."""
    assert type(classify("PutObject", error)) is kind


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"bucket": "Bad_Bucket"}, "not a valid S3 bucket name", id="bucket"),
        pytest.param({"part_size": 4 * MiB}, "between 5 MiB", id="part-too-small"),
        pytest.param({"concurrency": 0}, "between 1 and 64", id="concurrency"),
        pytest.param({"key_template": "{file}"}, "must contain {session}", id="template"),
        pytest.param({"retry_max": 0}, "retry_max must be positive", id="retry"),
        pytest.param(
            {
                "checksum_algorithm": ChecksumAlgorithm.SHA256,
                "checksum_type": ChecksumType.FULL_OBJECT,
            },
            "only as COMPOSITE",
            id="sha256-full-object",
        ),
    ],
)
def test_bad_upload_settings_are_refused(changes: dict[str, object], message: str) -> None:
    """Upload settings are validated when built, with the reason."""
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        UploadConfig(**{"bucket": "recordings", **changes})  # type: ignore[arg-type]


def test_part_size_grows_for_huge_files() -> None:
    """A file that would need more than 10000 parts gets bigger parts, in whole MiB."""
    config = UploadConfig(bucket="recordings", part_size=16 * MiB)
    assert config.part_size_for(100 * MiB) == 16 * MiB
    huge = config.part_size_for(1024 * 1024 * MiB)
    assert huge % MiB == 0 and huge * 10_000 >= 1024 * 1024 * MiB


# ---- uploading ----------------------------------------------------------------------------


def test_recording_files_skip_agent_files_and_put_metadata_last(tmp_path: Path) -> None:
    """The agent's own files stay local, and metadata.json is uploaded last."""
    entry = spooled(Spool(tmp_path), {"metadata.json": b"{}", "b.mp4": b"1", "a/c.txt": b"2"})
    (entry / "link").symlink_to(entry / "b.mp4")
    assert recording_files(entry) == ["a/c.txt", "b.mp4", "metadata.json"]


async def test_a_recording_is_uploaded_verified_and_then_deleted(rig: Rig) -> None:
    """Every file lands with its checksum and metadata; the local copy goes only after HEADs."""
    video = os.urandom(3 * PART + 123)
    meta = json.dumps({"meeting_url": "https://meet.example/Room"}).encode()
    entry = spooled(rig.spool, {"sess-1.mp4": video, "metadata.json": meta, "chat.txt": b""})
    rig.s3.on_head = lambda key: assert_local_copy(entry)
    assert await rig.uploader.run_once() == 1
    assert not entry.exists() and rig.spool.pending_count() == 0
    stored = rig.s3.objects[key("sess-1.mp4")]
    assert stored.body == video and stored.content_type == "video/mp4"
    assert stored.metadata == {"jibri-session": SESSION, "meeting-url": "https://meet.example/Room"}
    assert rig.s3.objects[key("metadata.json")].body == meta
    assert rig.s3.objects[key("chat.txt")].body == b""
    assert rig.s3.calls.count("UploadPart") == 4 and rig.s3.calls.count("PutObject") == 2
    assert [c for c in rig.s3.calls if c in ("PutObject", "CompleteMultipartUpload")][-1] == (
        "PutObject"
    )
    assert rig.s3.uploads == {}
    assert rig.metric("jibri_agent_uploads_total", outcome="success") == 1
    assert rig.metric("jibri_agent_upload_bytes_total") == len(video) + len(meta)
    assert rig.metric("jibri_agent_upload_objects_total") == 3


def assert_local_copy(entry: Path) -> None:
    assert (entry / "sess-1.mp4").exists(), "local copy deleted before verification"


async def test_crc32c_uploads_verify(tmp_path: Path) -> None:
    """With CRC32C (the default) every part and object carries a CRC32C and verifies."""
    rig = Rig(tmp_path)
    assert rig.config.checksum_algorithm is ChecksumAlgorithm.CRC32C
    spooled(rig.spool, {"a.mp4": os.urandom(PART + 1), "b.json": b"{}"})
    assert await rig.uploader.run_once() == 1
    assert rig.s3.objects[key("a.mp4")].checksum.endswith("-2")


async def test_full_object_crc32c_uploads_verify(tmp_path: Path) -> None:
    """With FULL_OBJECT the multipart object gets the CRC32C of its whole body, which the
    completion carries (S3 checks it) and HeadObject confirms."""
    rig = Rig(tmp_path, checksum_type=ChecksumType.FULL_OBJECT)
    video = os.urandom(2 * PART + 1)
    spooled(rig.spool, {"a.mp4": video, "b.json": b"{}"})
    assert await rig.uploader.run_once() == 1
    assert rig.s3.objects[key("a.mp4")].checksum == checksum(ChecksumAlgorithm.CRC32C, video)
    assert rig.s3.calls.count("UploadPart") == 3 and rig.spool.pending_count() == 0


async def test_sha256_uploads_verify_with_a_composite_checksum(tmp_path: Path) -> None:
    """With SHA256, which S3 cannot combine, the multipart object's checksum is COMPOSITE."""
    rig = Rig(tmp_path, checksum_algorithm=ChecksumAlgorithm.SHA256)
    spooled(rig.spool, {"a.mp4": os.urandom(PART + 1), "b.json": b"{}"})
    assert await rig.uploader.run_once() == 1
    assert rig.s3.objects[key("a.mp4")].checksum.endswith("-2")


async def test_a_wrong_whole_object_checksum_fails_the_completion(tmp_path: Path) -> None:
    """S3 refuses to complete a FULL_OBJECT upload whose whole-object checksum is wrong, so a
    bad combination of part checksums could never pass as verified."""
    rig = Rig(tmp_path)
    upload_id = await rig.s3.create_multipart_upload(
        key="k", content_type="video/mp4", metadata={}, checksum_type=ChecksumType.FULL_OBJECT
    )
    body = os.urandom(PART)
    ck = checksum(ChecksumAlgorithm.CRC32C, body)
    etag = await rig.s3.upload_part(
        key="k", upload_id=upload_id, number=1, body=io.BytesIO(body), checksum=ck
    )
    with pytest.raises(PermanentS3Error, match="BadDigest"):
        await rig.s3.complete_multipart_upload(
            key="k",
            upload_id=upload_id,
            parts=[CompletedPart(1, etag, ck)],
            checksum=checksum(ChecksumAlgorithm.CRC32C, body[1:]),
        )


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param([5, 5, 3], id="equal-parts-and-a-short-tail"),
        pytest.param([1], id="one-part"),
        pytest.param([0, 7, 0], id="empty-pieces"),
        pytest.param([4096, 1, 65537], id="uneven"),
    ],
)
def test_whole_object_crc32c_from_part_crcs(sizes: list[int]) -> None:
    """The CRC32C combined from the pieces' CRCs and lengths equals the CRC32C of the whole."""
    pieces = [os.urandom(n) for n in sizes]
    parts = [(checksum(ChecksumAlgorithm.CRC32C, p), len(p)) for p in pieces]
    whole = checksum(ChecksumAlgorithm.CRC32C, b"".join(pieces))
    assert object_checksum(ChecksumAlgorithm.CRC32C, ChecksumType.FULL_OBJECT, parts) == whole
    assert crc32c_combine(0, 0, 0) == 0


async def test_an_upload_begun_under_another_algorithm_starts_over(rig: Rig) -> None:
    """A multipart upload saved under another checksum algorithm (e.g. before an upgrade
    changed the default) cannot complete with this one: the file starts over, and the old
    upload is aborted."""
    video = os.urandom(2 * PART)
    entry = spooled(rig.spool, {"v.mp4": video})
    old = await rig.s3.create_multipart_upload(key=key("v.mp4"), content_type="", metadata={})
    st = (entry / "v.mp4").stat()
    store = StateStore(entry)
    store.state.files["v.mp4"] = FileRecord(
        key=key("v.mp4"),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        algorithm=ChecksumAlgorithm.SHA256,
        part_size=PART,
        upload_id=old,
        parts={1: PartRecord(etag='"x"', checksum="y", size=PART)},
        attempted=True,
    )
    await store.save()
    assert await rig.uploader.run_once() == 1
    assert rig.s3.calls.count("UploadPart") == 2 and "ListParts" not in rig.s3.calls
    assert rig.s3.objects[key("v.mp4")].body == video and rig.s3.uploads == {}


async def test_transient_errors_are_retried_until_they_pass(rig: Rig) -> None:
    """Throttling on every kind of call only delays the upload, and each retry is counted."""
    spooled(rig.spool, {"v.mp4": os.urandom(2 * PART), "s.txt": b"x"})
    for operation in (
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "PutObject",
        "HeadObject",
    ):
        rig.s3.fail(operation, 3)
    assert await rig.uploader.run_once() == 1
    assert rig.s3.objects[key("v.mp4")].body
    assert rig.metric("jibri_agent_upload_retries_total", operation="UploadPart") == 3


async def test_a_permanent_error_moves_the_recording_to_failed(rig: Rig) -> None:
    """AccessDenied keeps every file in failed/ with the reason, still counted as pending."""
    video = os.urandom(100)
    entry = spooled(rig.spool, {"v.mp4": video})
    rig.s3.fail("PutObject", 1, denied)
    assert await rig.uploader.run_once() == 0
    [failed] = rig.spool.failed_entries()
    assert failed.name == entry.name and (failed / "v.mp4").read_bytes() == video
    assert "AccessDenied" in json.loads((failed / FAILURE_NAME).read_text())["reason"]
    assert rig.spool.pending_count() == 1 and rig.spool.pending() == []
    assert rig.metric("jibri_agent_uploads_total", outcome="failed") == 1
    assert rig.metric("jibri_agent_spool_failed_recordings") == 1


async def test_a_requeued_failed_recording_uploads(rig: Rig) -> None:
    """Once the cause is fixed, a requeued recording uploads like any other."""
    spooled(rig.spool, {"v.mp4": b"data"})
    rig.s3.fail("PutObject", 1, denied)
    await rig.uploader.run_once()
    rig.spool.requeue_failed()
    assert await rig.uploader.run_once() == 1
    assert rig.spool.pending_count() == 0


async def test_resume_uploads_only_the_missing_parts(rig: Rig) -> None:
    """After a restart, parts S3 already holds are not sent again."""
    video = os.urandom(4 * PART)
    entry = spooled(rig.spool, {"v.mp4": video})
    upload_id = await rig.s3.create_multipart_upload(
        key=key("v.mp4"), content_type="video/mp4", metadata={}
    )
    store = StateStore(entry)
    st = (entry / "v.mp4").stat()
    record = FileRecord(
        key=key("v.mp4"),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        algorithm=rig.config.checksum_algorithm,
        part_size=PART,
        upload_id=upload_id,
        attempted=True,
    )
    for n in (1, 2):
        body = video[(n - 1) * PART : n * PART]
        ck = checksum(rig.config.checksum_algorithm, body)
        etag = await rig.s3.upload_part(
            key=record.key, upload_id=upload_id, number=n, body=io.BytesIO(body), checksum=ck
        )
        record.parts[n] = PartRecord(etag=etag, checksum=ck, size=PART)
    store.state.files["v.mp4"] = record
    await store.save()
    rig.s3.calls.clear()
    assert await rig.uploader.run_once() == 1
    assert rig.s3.calls.count("UploadPart") == 2 and "ListParts" in rig.s3.calls
    assert rig.s3.objects[key("v.mp4")].body == video and rig.s3.uploads == {}


async def test_resume_of_a_vanished_upload_starts_over(rig: Rig) -> None:
    """When S3 no longer knows the saved upload, the file is uploaded again from the start."""
    video = os.urandom(2 * PART)
    entry = spooled(rig.spool, {"v.mp4": video})
    st = (entry / "v.mp4").stat()
    store = StateStore(entry)
    store.state.files["v.mp4"] = FileRecord(
        key=key("v.mp4"),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        algorithm=rig.config.checksum_algorithm,
        part_size=PART,
        upload_id="gone",
        attempted=True,
        parts={1: PartRecord(etag='"x"', checksum="y", size=PART)},
    )
    await store.save()
    assert await rig.uploader.run_once() == 1
    assert rig.s3.objects[key("v.mp4")].body == video
    assert rig.metric("jibri_agent_upload_restarts_total", reason="vanished") == 1


async def test_an_upload_completed_before_a_crash_is_not_sent_again(rig: Rig) -> None:
    """An upload S3 completed before a crash is proven by HEAD and not sent again."""
    video = os.urandom(2 * PART)
    entry = spooled(rig.spool, {"v.mp4": video})
    original = rig.s3.complete_multipart_upload

    async def complete_then_crash(**kwargs: object) -> None:
        await original(**kwargs)  # type: ignore[arg-type]
        raise asyncio.CancelledError

    rig.s3.complete_multipart_upload = complete_then_crash  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await rig.uploader.run_once()
    rig.s3.complete_multipart_upload = original  # type: ignore[method-assign]
    rig.s3.calls.clear()
    assert await rig.make().run_once() == 1
    assert "UploadPart" not in rig.s3.calls and "CreateMultipartUpload" not in rig.s3.calls
    assert not entry.exists()


async def test_an_object_that_does_not_verify_is_uploaded_again(rig: Rig) -> None:
    """An object that fails verification is uploaded again, and failed/ if it persists."""
    spooled(rig.spool, {"v.mp4": b"abc"})
    real_head = rig.s3.head_object
    lies = [2]

    async def lying_head(*, key: str):  # type: ignore[no-untyped-def]
        head = await real_head(key=key)
        if lies[0] > 0 and head is not None:
            lies[0] -= 1
            return type(head)(head.size, "AAAA", head.metadata)
        return head

    rig.s3.head_object = lying_head  # type: ignore[method-assign]
    assert await rig.uploader.run_once() == 1
    assert rig.s3.calls.count("PutObject") == 3
    assert rig.metric("jibri_agent_upload_restarts_total", reason="mismatch") == 2

    spooled(rig.spool, {"w.mp4": b"abc"}, session="sess-2")
    lies[0] = 99
    assert await rig.uploader.run_once() == 0
    assert len(rig.spool.failed_entries()) == 1


async def test_stray_uploads_of_the_recordings_keys_are_aborted(rig: Rig) -> None:
    """A multipart upload left by a crash before its id was saved is aborted after success."""
    spooled(rig.spool, {"v.mp4": os.urandom(PART * 2)})
    stray = await rig.s3.create_multipart_upload(key=key("v.mp4"), content_type="", metadata={})
    other = await rig.s3.create_multipart_upload(
        key=key("v.mp4", "someone-else"), content_type="", metadata={}
    )
    assert await rig.uploader.run_once() == 1
    assert stray not in rig.s3.uploads and other in rig.s3.uploads
    assert rig.metric("jibri_agent_upload_orphans_aborted_total") == 1


async def test_sweep_of_an_instance_owned_prefix(tmp_path: Path) -> None:
    """Under a per-instance prefix, uploads no spool entry knows are aborted; known ones stay."""
    rig = Rig(tmp_path, "i-1", key_template="{prefix}/{instance}/{session}/{file}")
    uploader = rig.uploader
    entry = spooled(rig.spool, {"v.mp4": b"x"})
    known = await rig.s3.create_multipart_upload(
        key="recordings/i-1/sess-1/v.mp4", content_type="", metadata={}
    )
    store = StateStore(entry)
    store.state.files["v.mp4"] = FileRecord(
        key="recordings/i-1/sess-1/v.mp4", size=1, mtime_ns=0, upload_id=known
    )
    await store.save()
    orphan = await rig.s3.create_multipart_upload(
        key="recordings/i-1/old/v.mp4", content_type="", metadata={}
    )
    neighbour = await rig.s3.create_multipart_upload(
        key="recordings/i-2/old/v.mp4", content_type="", metadata={}
    )
    assert await uploader.sweep_orphans() == 1
    assert set(rig.s3.uploads) == {known, neighbour} and orphan not in rig.s3.uploads


async def test_a_file_changed_since_its_upload_began_starts_over(rig: Rig) -> None:
    """A file whose size or mtime changed since the saved state is uploaded afresh."""
    video = os.urandom(2 * PART)
    entry = spooled(rig.spool, {"v.mp4": video})
    old = await rig.s3.create_multipart_upload(key=key("v.mp4"), content_type="", metadata={})
    store = StateStore(entry)
    store.state.files["v.mp4"] = FileRecord(
        key=key("v.mp4"), size=1, mtime_ns=1, part_size=PART, upload_id=old, attempted=True
    )
    await store.save()
    assert await rig.uploader.run_once() == 1
    assert rig.s3.objects[key("v.mp4")].body == video
    assert old not in rig.s3.uploads
    assert rig.metric("jibri_agent_upload_restarts_total", reason="changed") == 1


async def test_run_picks_up_new_recordings_until_cancelled(rig: Rig) -> None:
    """The run loop uploads recordings spooled while it runs, and stops on cancel."""
    task = asyncio.create_task(rig.uploader.run())
    spooled(rig.spool, {"late.mp4": b"late"})
    for _ in range(1000):
        if rig.spool.pending_count() == 0:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.s3.objects[key("late.mp4")].body == b"late"


async def test_run_waits_for_another_uploader_to_let_go(rig: Rig) -> None:
    """While another process uploads from the spool, the run loop waits instead of racing it."""
    spooled(rig.spool, {"v.mp4": b"x"})
    other = rig.spool.lock_uploads()
    task = asyncio.create_task(rig.uploader.run())
    for _ in range(50):
        await asyncio.sleep(0)
    assert rig.s3.calls == [] and rig.spool.pending_count() == 1
    other.release()
    for _ in range(1000):
        if rig.spool.pending_count() == 0:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.s3.objects[key("v.mp4")].body == b"x"


def test_spool_gauges(rig: Rig) -> None:
    """The spool gauges show waiting and failed recordings and the oldest one's age."""
    spooled(rig.spool, {"v.mp4": b"x"})
    assert rig.metric("jibri_agent_spool_recordings") == 1
    assert rig.metric("jibri_agent_spool_oldest_age_seconds") == 60
    assert rig.metric("jibri_agent_spool_failed_recordings") == 0


# ---- the agent's settings -------------------------------------------------------------------


def _agent_settings(**given: str) -> Settings:
    return load_settings(
        {"controller_url": "http://127.0.0.1:1", **given}, {"JIBRI_AUTOSCALER_TOKEN": "t"}
    )


def test_uploads_are_off_without_a_bucket() -> None:
    """Without --upload-bucket the agent runs no uploader."""
    assert _agent_settings().upload_config() is None


def test_upload_settings_reach_the_uploader() -> None:
    """Every upload flag ends up in the uploader's settings."""
    config = _agent_settings(
        upload_bucket="recs",
        upload_prefix="p",
        upload_key_template="{prefix}/{instance}/{session}/{file}",
        upload_part_size="8MiB",
        upload_concurrency="2",
        upload_checksum_algorithm="crc32c",
        upload_checksum_type="full-object",
    ).upload_config()
    assert config == UploadConfig(
        bucket="recs",
        prefix="p",
        key_template="{prefix}/{instance}/{session}/{file}",
        part_size=8 * MiB,
        concurrency=2,
        checksum_algorithm=ChecksumAlgorithm.CRC32C,
        checksum_type=ChecksumType.FULL_OBJECT,
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        pytest.param({"upload_bucket": "Bad_Bucket"}, "--upload-bucket", id="bucket"),
        pytest.param({"upload_part_size": "1MiB"}, "between 5MiB and 5GiB", id="part-size"),
        pytest.param({"upload_part_size": "lots"}, "not a size", id="part-size-syntax"),
        pytest.param({"upload_concurrency": "0"}, "from 1 to 64", id="concurrency"),
        pytest.param({"upload_key_template": "{file}"}, "must contain", id="template"),
        pytest.param(
            {"upload_checksum_algorithm": "md5"}, "--upload-checksum-algorithm", id="algo"
        ),
        pytest.param({"upload_checksum_type": "whole"}, "--upload-checksum-type", id="type"),
        pytest.param(
            {"upload_checksum_algorithm": "sha256", "upload_checksum_type": "FULL_OBJECT"},
            "only as COMPOSITE",
            id="sha256-full-object",
        ),
    ],
)
def test_bad_upload_flags_are_refused(given: dict[str, str], message: str) -> None:
    """A bad upload flag fails the agent's start, naming the flag and the reason."""
    with pytest.raises(SettingsError) as caught:
        _agent_settings(**given)
    assert message in str(caught.value)
