"""The registry of tasks this server is running: what the heartbeat extends and cancel targets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import anyio

from asynq_aio.protocol.codec import TaskMessage


@dataclass(slots=True)
class ActiveTask:
    msg: TaskMessage
    attempt: str  # the dequeue's token: outcomes and lease extensions name it
    started: datetime
    deadline: datetime
    lease_expiry: float  # unix s, as last written to Redis
    cancel_reason: str = ""  # "cancel" (asynq:cancel), "shutdown", "lease"; "" for a timeout
    # The handler's cancel scope (it carries the deadline), set once the handler's task enters it;
    # a cancel that comes earlier is remembered and applied on entry.
    scope: anyio.CancelScope | None = None
    cancel_called: bool = False

    def cancel(self) -> None:
        self.cancel_called = True
        if self.scope is not None:
            self.scope.cancel()


class ActiveTasks:
    def __init__(self) -> None:
        self._tasks: dict[str, ActiveTask] = {}

    def add(self, task: ActiveTask) -> None:
        self._tasks[task.msg.id] = task

    def remove(self, task_id: str) -> None:
        self._tasks.pop(task_id, None)

    def get(self, task_id: str) -> ActiveTask | None:
        return self._tasks.get(task_id)

    def __len__(self) -> int:
        return len(self._tasks)

    def snapshot(self) -> list[ActiveTask]:
        return list(self._tasks.values())

    def by_queue(self) -> dict[str, list[ActiveTask]]:
        out: dict[str, list[ActiveTask]] = {}
        for t in self._tasks.values():
            out.setdefault(t.msg.queue, []).append(t)
        return out

    def cancel(self, task_id: str, reason: str) -> bool:
        t = self._tasks.get(task_id)
        if t is None:
            return False
        if not t.cancel_reason:
            t.cancel_reason = reason
        t.cancel()
        return True
