"""How the dashboard shows values: payloads (pretty JSON when they are JSON), times and durations.

Durations, byte counts and error rates use the CLI's formats (:mod:`asynq_aio.cli.render`), so the
terminal and the browser say the same thing about the same queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asynq_aio.cli.render import error_rate, fmt_bytes, fmt_duration

__all__ = ["Payload", "error_rate", "fmt_bytes", "fmt_duration", "fmt_time", "fmt_when", "payload", "preview"]

PREVIEW_CHARS = 80
DETAIL_BYTES = 64 * 1024  # a larger payload is cut in the detail view: the page stays light


@dataclass(frozen=True, slots=True)
class Payload:
    """A payload ready to show: ``kind`` says how it was read (json, text, binary or empty)."""

    kind: str
    text: str
    size: int
    truncated: bool


def payload(data: bytes | None) -> Payload:
    """Pretty-printed JSON when the bytes parse as JSON, else the text, else a hex dump of binary."""
    if not data:
        return Payload("empty", "", 0, False)
    size = len(data)
    cut = data[:DETAIL_BYTES]
    try:
        decoded = cut.decode()
    except UnicodeDecodeError:
        decoded = None
    if decoded is not None and size <= DETAIL_BYTES:
        try:
            return Payload("json", json.dumps(json.loads(decoded), indent=2, ensure_ascii=False), size, False)
        except ValueError:
            pass
    if decoded is not None and all(c.isprintable() or c in "\n\r\t" for c in decoded):
        return Payload("text", decoded, size, size > DETAIL_BYTES)
    hexdump = "\n".join(f"{i:08x}  {cut[i : i + 16].hex(' ')}" for i in range(0, min(len(cut), 4096), 16))
    return Payload("binary", hexdump, size, size > 4096)


def preview(data: bytes | None, limit: int = PREVIEW_CHARS) -> str:
    """One line for a table cell: compact text, or ``N bytes (binary)``."""
    if not data:
        return ""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return f"{len(data)} bytes (binary)"
    text = " ".join(text.split())
    if not text.isprintable():
        return f"{len(data)} bytes (binary)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fmt_time(dt: datetime | None) -> str:
    """An absolute UTC time, sortable and unambiguous: ``2026-12-07 01:49:53 UTC``."""
    if dt is None:
        return "-"
    return f"{dt.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def fmt_when(dt: datetime | None, now: datetime | None = None) -> str:
    """A time relative to now: ``in 59m16s`` or ``6s ago``."""
    if dt is None:
        return "-"
    delta: timedelta = dt - (now or datetime.now(tz=UTC))
    if delta.total_seconds() >= 0:
        return f"in {fmt_duration(delta)}"
    return f"{fmt_duration(delta)} ago"
