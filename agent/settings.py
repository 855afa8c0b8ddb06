"""The agent's settings: every flag has an environment variable and a default (OPTIONS).

A flag on the command line wins over its environment variable, which wins over the default.
Validation collects every problem and names the flag, its variable and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from agent.upload.checksums import ChecksumAlgorithm, ChecksumType
from agent.upload.config import UploadConfig, bucket_name, concurrency, key_template, part_size
from agent.upload.keys import DEFAULT_KEY_TEMPLATE
from common.durations import parse_duration
from common.logs import LogFormat
from common.wire import INSTANCE_ID_RE, TOKEN_ENV

TOKEN_FILE_ENV: Final = "JIBRI_AGENT_TOKEN_FILE"


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    controller_url: str
    """Base URL of the controller; reports go to <url>/v1/reports."""
    token: str = field(repr=False)
    """Bearer token shared with the controller."""
    instance_id: str | None
    """EC2 instance id; None: ask the instance metadata service."""
    region: str | None
    """AWS region; None: ask the instance metadata service (when AWS is used)."""
    imds_url: str
    jibri_health_url: str
    jibri_shutdown_url: str
    webhook_listen: Listen
    """Where Jibri's webhook subscriber is served (POST /v1/status)."""
    metrics_listen: Listen
    """Where /metrics (Prometheus) and /healthz are served."""
    report_interval: float
    poll_interval: float
    request_timeout: float
    drain_resend_interval: float
    """While draining, how often to repeat gracefulShutdown to a Jibri that still answers."""
    state_dir: Path
    """Holds the drain marker; must survive a reboot of the agent (not tmpfs)."""
    spool_dir: Path
    fallback: bool
    """Publish JibriFree and guard protection while the controller is away."""
    fallback_namespace: str
    fallback_period: float
    fallback_after: float
    log_level: str
    log_format: LogFormat
    upload_bucket: str | None = None
    """S3 bucket for recordings; None: no uploader runs and recordings stay in the spool."""
    upload_prefix: str = "recordings"
    upload_key_template: str = DEFAULT_KEY_TEMPLATE
    upload_part_size: int = 8 << 20
    upload_concurrency: int = 8
    upload_checksum_algorithm: ChecksumAlgorithm = ChecksumAlgorithm.CRC32C
    upload_checksum_type: ChecksumType = ChecksumType.COMPOSITE
    recordings_dir: Path = Path("/var/lib/jibri/recordings")
    """Jibri's recording.recordings-directory: a session directory left there is pending."""
    recordings_quiet_for: float = 60.0
    """A leftover is adopted only once nothing in it changed for this long."""
    ready_file: Path | None = None
    """Written (atomically) with the bound listen addresses once both servers listen."""
    warm_gate: bool = False
    """Start nothing until IMDS says the group means this instance for service (warm pools,
    agent/warm_gate.py)."""

    def upload_config(self) -> UploadConfig | None:
        """The uploader's settings, or None when uploads are off (no bucket)."""
        if self.upload_bucket is None:
            return None
        return UploadConfig(
            bucket=self.upload_bucket,
            prefix=self.upload_prefix,
            key_template=self.upload_key_template,
            part_size=self.upload_part_size,
            concurrency=self.upload_concurrency,
            checksum_algorithm=self.upload_checksum_algorithm,
            checksum_type=self.upload_checksum_type,
        )


@dataclass(frozen=True)
class Option:
    name: str
    """Settings field and flag (`--` + name with dashes)."""
    env: str
    default: str | None
    help: str
    parse: Callable[[str], Any]
    metavar: str = "VALUE"
    is_flag: bool = False
    flag_name: str | None = None

    @property
    def flag(self) -> str:
        return "--" + (self.flag_name or self.name).replace("_", "-")


class SettingsError(Exception):
    """Bad settings; `problems` holds one line per bad option."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise ValueError(f"{value!r} has an invalid port") from exc
    return value


def _listen(value: str) -> Listen:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (port 0-65535)")
    return Listen(host, int(port))


def _seconds(value: str) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return seconds


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def _instance_id(value: str) -> str:
    if not INSTANCE_ID_RE.match(value):
        raise ValueError(f"{value!r} is not an EC2 instance id (i-…)")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value.lower()

    return parse


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _opt(
    name: str, default: str | None, parse: Callable[[str], Any], help: str, **kw: Any
) -> Option:
    return Option(name, "JIBRI_AGENT_" + name.upper(), default, help, parse, **kw)


OPTIONS: Final = (
    _opt(
        "controller_url",
        None,
        _url,
        "controller base URL (required)",
        metavar="URL",
        flag_name="controller",
    ),
    _opt("instance_id", None, _instance_id, "EC2 instance id (default: from IMDSv2)", metavar="ID"),
    _opt("region", None, _text, "AWS region (default: from IMDSv2)", metavar="REGION"),
    _opt("imds_url", "http://169.254.169.254", _url, "instance metadata service", metavar="URL"),
    _opt(
        "jibri_health_url",
        "http://127.0.0.1:2222/jibri/api/v1.0/health",
        _url,
        "Jibri's health endpoint",
        metavar="URL",
    ),
    _opt(
        "jibri_shutdown_url",
        "http://127.0.0.1:3333/jibri/api/internal/v1.0/gracefulShutdown",
        _url,
        "Jibri's graceful shutdown endpoint",
        metavar="URL",
    ),
    _opt("webhook_listen", "127.0.0.1:2223", _listen, "Jibri webhook subscriber", metavar="H:P"),
    _opt("metrics_listen", "127.0.0.1:9466", _listen, "/metrics and /healthz", metavar="H:P"),
    _opt("report_interval", "5s", _seconds, "period of reports to the controller", metavar="DUR"),
    _opt("poll_interval", "2s", _seconds, "period of Jibri health polls", metavar="DUR"),
    _opt("request_timeout", "3s", _seconds, "timeout of each HTTP request", metavar="DUR"),
    _opt(
        "drain_resend_interval",
        "30s",
        _seconds,
        "while draining, repeat gracefulShutdown this often to a Jibri that still answers",
        metavar="DUR",
    ),
    _opt(
        "ready_file",
        None,
        Path,
        "once listening, write the bound addresses here as JSON (port 0 picks free ports)",
        metavar="PATH",
    ),
    _opt("state_dir", "/var/lib/jibri-agent", Path, "holds the drain marker", metavar="DIR"),
    _opt("spool_dir", "/var/spool/jibri-agent", Path, "recording spool", metavar="DIR"),
    _opt(
        "recordings_dir",
        "/var/lib/jibri/recordings",
        Path,
        "Jibri's recordings-directory: recordings its finalize left there count as pending "
        "and are adopted into the spool",
        metavar="DIR",
    ),
    _opt(
        "recordings_quiet_for",
        "60s",
        _seconds,
        "adopt a left recording only once nothing in it changed for this long",
        metavar="DUR",
    ),
    _opt(
        "fallback",
        "false",
        _bool,
        "classic fallback: publish JibriFree, guard protection while the controller is away",
        is_flag=True,
    ),
    _opt("fallback_namespace", "Jibri", _text, "CloudWatch namespace of JibriFree", metavar="NS"),
    _opt(
        "warm_gate",
        "false",
        _bool,
        "warm pools: start nothing until IMDS's autoscaling/target-lifecycle-state is InService",
        is_flag=True,
    ),
    _opt("fallback_period", "60s", _seconds, "period of the fallback", metavar="DUR"),
    _opt(
        "fallback_after",
        "60s",
        _seconds,
        "guard protection once the controller accepted no report for this long",
        metavar="DUR",
    ),
    _opt(
        "upload_bucket",
        None,
        bucket_name,
        "S3 bucket for recordings (none: no uploads, recordings stay in the spool)",
        metavar="BUCKET",
    ),
    _opt("upload_prefix", "recordings", str, "{prefix} of the object keys", metavar="PREFIX"),
    _opt(
        "upload_key_template",
        DEFAULT_KEY_TEMPLATE,
        key_template,
        "object key of each recording file",
        metavar="TEMPLATE",
    ),
    _opt("upload_part_size", "8MiB", part_size, "multipart part size (min 5MiB)", metavar="SIZE"),
    _opt("upload_concurrency", "8", concurrency, "parts uploaded at once", metavar="N"),
    _opt(
        "upload_checksum_algorithm",
        "CRC32C",
        lambda v: ChecksumAlgorithm(v.upper()),
        "S3 checksum of every part and object: CRC32C or SHA256",
        metavar="ALGO",
    ),
    _opt(
        "upload_checksum_type",
        "COMPOSITE",
        lambda v: ChecksumType(v.upper().replace("-", "_")),
        "checksum of multipart objects: COMPOSITE, or FULL_OBJECT (CRC32C only)",
        metavar="TYPE",
    ),
    _opt(
        "log_level",
        "info",
        _choice("debug", "info", "warning", "error"),
        "log level",
        metavar="LEVEL",
    ),
    _opt(
        "log_format",
        "json",
        _choice("json", "text"),
        "json: one event per line, with the controller's field names; text: for a terminal",
        metavar="FMT",
    ),
)


def _read_token(given: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    token_file = given.get("token_file") or environ.get(TOKEN_FILE_ENV)
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"--token-file {token_file}: cannot read ({exc.strerror})") from exc
        if not token:
            raise ValueError(f"--token-file {token_file}: the file is empty")
        return token
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ValueError(f"no token: set {TOKEN_ENV} or --token-file ({TOKEN_FILE_ENV})")
    return token


def load_settings(given: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Build the settings from parsed flags (None/False when not given) and the environment."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for option in OPTIONS:
        flag_value = given.get(option.name)
        if option.is_flag:
            raw = "true" if flag_value else environ.get(option.env, option.default)
        else:
            raw = flag_value if flag_value is not None else environ.get(option.env, option.default)
        if raw is None:
            if option.name == "controller_url":
                problems.append(f"{option.flag} ({option.env}) is required")
            values[option.name] = None
            continue
        try:
            values[option.name] = option.parse(raw)
        except ValueError as exc:
            problems.append(f"{option.flag} ({option.env}): {exc}")
    try:
        values["token"] = _read_token(given, environ)
    except ValueError as exc:
        problems.append(str(exc))
    algorithm, kind = values.get("upload_checksum_algorithm"), values.get("upload_checksum_type")
    if algorithm is not None and kind is not None:
        try:
            kind.check(algorithm)
        except ValueError as exc:
            problems.append(f"--upload-checksum-type (JIBRI_AGENT_UPLOAD_CHECKSUM_TYPE): {exc}")
    if problems:
        raise SettingsError(problems)
    return Settings(**values)
