"""Object keys and object metadata for uploaded recordings."""

from __future__ import annotations

import mimetypes
import string
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

DEFAULT_KEY_TEMPLATE: Final = "{prefix}/{yyyy}/{mm}/{dd}/{session}/{file}"
FIELDS: Final = frozenset({"prefix", "instance", "yyyy", "mm", "dd", "hh", "session", "file"})
# Fields that differ between recordings of one instance; the key prefix before the first
# of them is the same for all of this instance's objects.
_PER_RECORDING: Final = frozenset({"yyyy", "mm", "dd", "hh", "session", "file"})
METADATA_VALUE_LIMIT: Final = 1024


class KeyTemplateError(ValueError):
    pass


@dataclass(frozen=True)
class KeyTemplate:
    """A validated key template such as `{prefix}/{yyyy}/{mm}/{dd}/{session}/{file}`."""

    template: str
    prefix: str = ""
    instance: str | None = None

    def __post_init__(self) -> None:
        names = []
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as error:
            raise KeyTemplateError(f"key template {self.template!r}: {error}") from None
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if name not in FIELDS or spec or conversion:
                known = ", ".join("{" + f + "}" for f in sorted(FIELDS))
                raise KeyTemplateError(
                    f"key template {self.template!r}: unknown field {{{name}}}; known: {known}"
                )
            names.append(name)
        for required in ("session", "file"):
            if required not in names:
                raise KeyTemplateError(
                    f"key template {self.template!r} must contain {{{required}}}, "
                    "or objects of different recordings would overwrite each other"
                )
        if "instance" in names and not self.instance:
            raise KeyTemplateError(
                f"key template {self.template!r} uses {{instance}} but the instance id is unknown"
            )

    def render(self, *, session: str, file: str, enqueued_at: datetime) -> str:
        at = enqueued_at.astimezone(UTC)
        values = {
            "prefix": self.prefix.strip("/"),
            "instance": self.instance or "",
            "yyyy": f"{at.year:04d}",
            "mm": f"{at.month:02d}",
            "dd": f"{at.day:02d}",
            "hh": f"{at.hour:02d}",
            "session": key_segment(session),
            "file": "/".join(key_segment(part) for part in file.split("/")),
        }
        return _normalise(self.template.format_map(values))

    def owned_prefix(self) -> str | None:
        """The key prefix that only this instance writes under, or None if it shares one.

        Only a template that puts {instance} before every per-recording field has one; then
        any multipart upload under it that no spool entry knows is an orphan of ours.
        """
        literal = []
        seen_instance = False
        for text, name, _, _ in string.Formatter().parse(self.template):
            literal.append(text)
            if name is None:
                continue
            if name in _PER_RECORDING:
                break
            seen_instance |= name == "instance"
            literal.append(self.prefix.strip("/") if name == "prefix" else self.instance or "")
        if not seen_instance:
            return None
        prefix = _normalise("".join(literal))
        return prefix if prefix.endswith("/") or not prefix else prefix + "/"


def _normalise(key: str) -> str:
    """No leading slash and no empty segments, which an empty prefix would otherwise leave."""
    trailing = "/" if key.endswith("/") else ""
    return "/".join(part for part in key.split("/") if part) + trailing


def key_segment(name: str) -> str:
    """A file or session name as a key segment: valid UTF-8, no control characters."""
    out = []
    for c in name:
        if 0xDC80 <= ord(c) <= 0xDCFF:  # an undecodable byte, kept by os.fsdecode
            out.append(f"%{ord(c) - 0xDC00:02X}")
        elif not c.isprintable():
            out.append(urllib.parse.quote(c, safe=""))
        else:
            out.append(c)
    return "".join(out)


def metadata_value(value: str) -> str:
    """A value S3 accepts as user metadata: printable ASCII, non-ASCII percent-encoded."""
    safe = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
    encoded = urllib.parse.quote(value.strip(), safe=safe)
    return encoded[:METADATA_VALUE_LIMIT]


def object_metadata(session: str, meeting_url: str | None) -> Mapping[str, str]:
    metadata = {"jibri-session": metadata_value(session)}
    if meeting_url:
        metadata["meeting-url"] = metadata_value(meeting_url)
    return metadata


def content_type(file_name: str) -> str:
    guessed, _ = mimetypes.guess_type(file_name, strict=False)
    return guessed or "application/octet-stream"
