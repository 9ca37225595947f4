"""The user-facing task types: what a producer submits (Task) and what Redis reports back (TaskInfo)."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, field_serializer

from asynq_aio._errors import InvalidTaskError

ModelT = TypeVar("ModelT", bound=BaseModel)


class TaskState(enum.StrEnum):
    """The value of the task hash's ``state`` field."""

    PENDING = "pending"
    ACTIVE = "active"
    SCHEDULED = "scheduled"
    RETRY = "retry"
    ARCHIVED = "archived"
    COMPLETED = "completed"
    AGGREGATING = "aggregating"


PayloadLike = BaseModel | Mapping[str, Any] | list[Any] | bytes | bytearray | memoryview | str | None


def encode_payload(payload: PayloadLike) -> bytes:
    """Turn what a producer passes into the bytes stored in ``TaskMessage.payload``.

    Dicts and lists become compact JSON, as Go's ``json.Marshal`` writes them, so Go handlers that
    unmarshal JSON read our payloads unchanged. Models are dumped by alias so a field named ``from_``
    with alias ``from`` keeps the wire name.
    """
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, BaseModel):
        return payload.model_dump_json(by_alias=True).encode()
    if isinstance(payload, Mapping | list):
        try:
            return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidTaskError(f"payload is not JSON-serialisable: {exc}") from exc
    raise InvalidTaskError(
        f"unsupported payload type {type(payload).__name__}: pass a pydantic model, dict, list, str or bytes"
    )


class Task:
    """A unit of work: a type name that selects the handler, a payload, and optional headers.

    A plain class rather than a pydantic model: a task is built on every enqueue and every dequeue,
    and its payload is already validated (or deliberately opaque bytes).
    """

    __slots__ = ("headers", "payload", "type")

    def __init__(
        self, type: str, payload: PayloadLike = b"", *, headers: Mapping[str, str] | None = None
    ) -> None:
        if not isinstance(type, str) or not type.strip():
            raise InvalidTaskError("task type must be a non-empty string")
        self.type: str = type
        self.payload: bytes = encode_payload(payload)
        self.headers: dict[str, str] = dict(headers) if headers else {}

    def json(self) -> Any:
        """The payload parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.payload)

    def model(self, model: type[ModelT]) -> ModelT:
        """The payload validated as ``model``."""
        return model.model_validate_json(self.payload)

    def __repr__(self) -> str:
        return f"Task(type={self.type!r}, payload={self.payload[:64]!r}, headers={self.headers!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Task):
            return NotImplemented
        return (self.type, self.payload, self.headers) == (other.type, other.payload, other.headers)

    __hash__ = None  # type: ignore[assignment]


class TaskInfo(BaseModel):
    """A snapshot of one stored task, as the client, inspector and handlers see it.

    A pydantic model so that web apps can return it from a route as JSON. In JSON, ``payload`` and
    ``result`` are their UTF-8 text (what JSON payloads are); bytes that are not UTF-8 appear as
    ``\\xNN`` escapes instead of failing the whole response.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    queue: str
    type: str
    payload: bytes
    headers: dict[str, str] = {}
    state: TaskState
    max_retry: int
    retried: int = 0
    last_err: str = ""
    last_failed_at: datetime | None = None
    timeout: timedelta | None = None
    deadline: datetime | None = None
    group: str = ""
    next_process_at: datetime | None = None
    is_orphaned: bool = False
    retention: timedelta | None = None
    completed_at: datetime | None = None
    result: bytes | None = None
    unique_key: str = ""

    @field_serializer("payload", "result", when_used="json-unless-none")
    def _bytes_as_text(self, value: bytes) -> str:
        return value.decode("utf-8", errors="backslashreplace")
