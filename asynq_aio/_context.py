"""Per-task metadata reachable from inside a handler without globals (a contextvar per task)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from asynq_aio._errors import AsynqError


@dataclass(slots=True)
class TaskContext:
    """What a running handler may want to know about its task, and where it writes its result."""

    id: str
    type: str
    queue: str
    retry_count: int
    max_retry: int
    headers: dict[str, str] = field(default_factory=dict)
    _write_result: Callable[[bytes], Awaitable[None]] | None = None

    async def write_result(self, data: bytes) -> None:
        """Store ``data`` in the task hash's ``result`` field (readable as ``TaskInfo.result``)."""
        if self._write_result is None:
            raise AsynqError("this task context cannot write results")
        await self._write_result(bytes(data))


_current: ContextVar[TaskContext] = ContextVar("asynq_aio_task")


def current_task() -> TaskContext:
    """The running task's context; raises LookupError outside a handler."""
    return _current.get()


def set_current(ctx: TaskContext) -> None:
    """Make ``ctx`` what :func:`current_task` returns in the current context (the processor sets it inside
    each handler's own task)."""
    _current.set(ctx)
