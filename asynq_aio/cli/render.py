"""What the admin commands share: running a coroutine against an Inspector, rich tables in the Go
CLI's layout, JSON output, and the Go CLI's formats for times, durations, payloads and rates."""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table

from asynq_aio._connection import RetryPolicy
from asynq_aio._inspector import Inspector
from asynq_aio._task import TaskInfo
from asynq_aio.cli.common import ConnectionFlags, run_async

R = TypeVar("R")
T = TypeVar("T")

CLI_RETRY = RetryPolicy(budget=5.0)

# Task counts by state, in the Go CLI's column order.
STATE_COLUMNS = ("active", "pending", "aggregating", "scheduled", "retry", "archived", "completed")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
QueueArgument = Annotated[str, typer.Argument(help="Queue name.")]
PageOption = Annotated[int, typer.Option("--page", "-p", min=1, help="Page number, from 1.")]


def with_inspector(conn: ConnectionFlags, fn: Callable[[Inspector], Awaitable[R]]) -> R:
    """Open an Inspector from the connection flags, run ``fn`` on it, close it."""
    opt = conn.options()
    if conn.uses_default:
        # an empty answer from the wrong server looks like an empty system: say which one was asked
        # (on stderr, so that --json output stays clean)
        typer.echo(f"(no --redis-url or ASYNQ_REDIS_URL: asking {opt.describe()})", err=True)

    async def go() -> R:
        async with Inspector(opt, retry=CLI_RETRY) as insp:
            return await fn(insp)

    return run_async(go, uvloop=False, quiet=True)


def for_each(
    conn: ConnectionFlags, names: Sequence[str], fn: Callable[[Inspector, str], Awaitable[R]]
) -> list[tuple[str, R]]:
    """``fn`` on one Inspector for each name (queue, task ID, entry ID) in turn: ``(name, result)``."""

    async def go(insp: Inspector) -> list[tuple[str, R]]:
        return [(name, await fn(insp, name)) for name in names]

    return with_inspector(conn, go)


def console() -> Console:
    """A console that does not wrap or colour when the output is not a terminal (pipes, tests)."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=240, no_color=True, highlight=False)


def table(*columns: str) -> Table:
    """A Go-CLI-like table: bold header, a rule under it, no borders, no wrapping."""
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", pad_edge=False)
    for c in columns:
        t.add_column(c, no_wrap=True, overflow="fold")
    return t


def echo_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON, converted by :func:`jsonable` (non-ASCII kept as is)."""
    typer.echo(json.dumps(jsonable(obj), indent=2, ensure_ascii=False))


def jsonable(obj: Any) -> Any:
    """Dataclasses and TaskInfo to plain JSON values. A bytes field ``x`` becomes ``x`` (its text,
    or null when it is not UTF-8) and ``x_b64``; times are ISO 8601, durations seconds."""
    if isinstance(obj, TaskInfo):
        return task_json(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _fields({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, BaseModel):
        return _fields(dict(obj))
    if isinstance(obj, dict):
        return _fields(obj)
    if isinstance(obj, list | tuple):
        return [jsonable(x) for x in obj]
    if isinstance(obj, datetime):
        return obj.astimezone(UTC).isoformat()
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if isinstance(obj, bytes):
        return _text(obj)
    if hasattr(obj, "value") and isinstance(obj.value, str):  # enums
        return obj.value
    return obj


def _fields(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out[str(k)] = jsonable(v)
        if isinstance(v, bytes):
            out[f"{k}_b64"] = base64.b64encode(v).decode()
    return out


def _text(data: bytes) -> str | None:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def task_json(t: TaskInfo) -> dict[str, Any]:
    """A TaskInfo as a JSON object; a bytes field ``x`` gives ``x`` (its text, or null) and ``x_b64``."""
    return _fields(dict(t))


# -- the Go CLI's formats ---------------------------------------------------------------------------


def fmt_time(dt: datetime | None) -> str:
    """Go's time.UnixDate in UTC: ``Mon Nov 23 11:23:53 UTC 2026``."""
    if dt is None:
        return "-"
    u = dt.astimezone(UTC)
    return f"{u:%a %b} {u.day:>2} {u:%H:%M:%S} UTC {u.year}"


def fmt_duration(td: timedelta) -> str:
    """Go's Duration.String rounded to seconds: ``4h35m22s``, ``59m16s``, ``5s``."""
    total = int(abs(td.total_seconds()) + 0.5)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def fmt_relative(dt: datetime | None, now: datetime | None = None) -> str:
    """``in 59m16s`` for the future, ``6s ago`` for the past."""
    if dt is None:
        return "-"
    delta = dt - (now or datetime.now(tz=UTC))
    if delta.total_seconds() >= 0:
        return f"in {fmt_duration(delta)}"
    return f"{fmt_duration(delta)} ago"


def fmt_payload(data: bytes | None, limit: int = 120) -> str:
    """The payload as text when it is printable UTF-8, else ``non-printable bytes`` (as Go)."""
    if data is None:
        return ""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return "non-printable bytes"
    if not text.isprintable():
        return "non-printable bytes"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_rate(processed: int, failed: int) -> str:
    """Failed as a percentage of processed (``12.50%``), or ``N/A`` when nothing was processed."""
    return "N/A" if processed == 0 else f"{failed / processed * 100:.2f}%"


def fmt_bytes(n: int | None) -> str:
    """A byte count in B, KB, MB or GB (1024 steps), or ``-`` when unknown (None)."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.2f}{unit}"
        size /= 1024
    return f"{size:.2f}GB"  # pragma: no cover


def sections(c: Console, items: Iterable[T]) -> Iterator[T]:
    """``items``, with the Go CLI's rule printed between two (one section per queue or entry)."""
    for i, item in enumerate(items):
        if i:
            c.print("\n" + "=" * 49 + "\n")
        yield item


def rate_table(processed: int, failed: int) -> Table:
    """Processed and failed counts with the error rate, as one row."""
    t = table("processed", "failed", "error rate")
    t.add_row(str(processed), str(failed), error_rate(processed, failed))
    return t


def print_lines(c: Console, pairs: Sequence[tuple[str, str]]) -> None:
    """``Label:  value`` lines with the values aligned, as Go's ``queue inspect`` prints them."""
    width = max(len(k) for k, _ in pairs) + 2
    for k, v in pairs:
        c.print(f"{k + ':':<{width}}{v}", markup=False, highlight=False)
