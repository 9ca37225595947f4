"""Structured logging: the fields every task-related record carries, and formatters that print them.

asynq-aio logs through the standard :mod:`logging` module only, under one hierarchy
(``asynq_aio.server``, ``asynq_aio.client``, ``asynq_aio.transport``, ...), so an application
configures it like any other library. A record about a task carries its identity as attributes set
with ``extra=`` (``task_id``, ``task_type``, ``queue``, ``retried``, ``max_retry``): a log pipeline
can then filter or group by task without parsing the message text, which stays human-readable.

Two formatters render those attributes: :class:`JsonFormatter` (one JSON object per line, for log
shippers) and :class:`KeyValueFormatter` (the usual text line plus ``key=value`` pairs).
:class:`TaskContextFilter` adds the running task's fields to records that *user code* logs inside a
handler, so ``log.info("sending email")`` in a handler is attributable to its task as well.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal, Protocol

from asynq_aio._context import current_task

__all__ = [
    "TASK_FIELDS",
    "JsonFormatter",
    "KeyValueFormatter",
    "LogFormat",
    "TaskContextFilter",
    "configure_logging",
    "context_fields",
    "extra_fields",
    "task_fields",
]

LogFormat = Literal["text", "json"]

#: The attribute names a task-related record carries (set through ``extra=``).
TASK_FIELDS: tuple[str, ...] = ("task_id", "task_type", "queue", "retried", "max_retry")

# Every attribute a plain LogRecord has; anything else on a record came from ``extra=`` or a filter.
_STANDARD_ATTRS: frozenset[str] = frozenset(
    {
        *logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)


class _MessageLike(Protocol):
    """The fields of a task message that identify it (``TaskMessage`` from the protocol layer)."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def retried(self) -> int: ...
    @property
    def retry(self) -> int: ...


def task_fields(msg: _MessageLike) -> dict[str, Any]:
    """The ``extra=`` mapping for a record about ``msg``: id, type, queue, retries so far and allowed."""
    return {
        "task_id": msg.id,
        "task_type": msg.type,
        "queue": msg.queue,
        "retried": msg.retried,
        "max_retry": msg.retry,
    }


def context_fields() -> dict[str, Any]:
    """The running task's fields (from :func:`asynq_aio.current_task`), or ``{}`` outside a handler."""
    try:
        ctx = current_task()
    except LookupError:
        return {}
    return {
        "task_id": ctx.id,
        "task_type": ctx.type,
        "queue": ctx.queue,
        "retried": ctx.retry_count,
        "max_retry": ctx.max_retry,
    }


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The attributes of ``record`` that are not standard LogRecord ones (what ``extra=`` added)."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class TaskContextFilter(logging.Filter):
    """Adds the running task's fields to records logged inside a handler that do not carry them.

    Attach it to a *handler* (``handler.addFilter(TaskContextFilter())``): logger filters only see
    records of their own logger, while a handler sees the application's records too. It never drops a
    record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the running task's fields to a record that has no ``task_id``, never replacing an attribute it
        has; always True (keeps the record)."""
        if getattr(record, "task_id", None) is None:
            for key, value in context_fields().items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, every
    ``extra=`` field, and ``exc_info`` / ``stack_info`` as text when present.

    Values that JSON cannot represent are written with ``str()``: a log line must never fail.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON; an ``extra=`` field named ``time``, ``level``, ``logger`` or
        ``message`` does not replace the standard one."""
        out: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def _kv_value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class KeyValueFormatter(logging.Formatter):
    """The usual text line, followed by the record's ``extra=`` fields as ``key=value`` pairs."""

    def __init__(self, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        """The formatted line with ``key=value`` pairs appended to its first line (a traceback stays below); a
        value that is empty or holds a space, quote, ``=``, tab or newline is written as a JSON string."""
        line = super().format(record)
        fields = extra_fields(record)
        if not fields:
            return line
        pairs = " ".join(f"{k}={_kv_value(v)}" for k, v in fields.items())
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {pairs}{sep}{tail}"


def configure_logging(
    level: int | str = logging.INFO,
    fmt: LogFormat = "text",
    *,
    stream: IO[str] | None = None,
    force: bool = False,
) -> logging.Handler | None:
    """Send every record to ``stream`` (stderr) in ``fmt``, with task fields on handler records.

    Like :func:`logging.basicConfig`, it does nothing (and returns ``None``) when the root logger
    already has handlers, unless ``force`` replaces them: an entry point such as ``asynq-aio worker``
    sets logging up once, and must not fight an application or test runner that already did. A web
    app with its own logging setup should instead add :class:`JsonFormatter` and
    :class:`TaskContextFilter` to its handler. Returns the installed handler.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    root = logging.getLogger()
    if root.handlers and not force:
        return None
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(TaskContextFilter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
