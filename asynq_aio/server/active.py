"""The registry of tasks this server is running: what the heartbeat extends and cancel targets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from asynq_aio.protocol.codec import TaskMessage
from asynq_aio.server.stopper import HandlerStop


@dataclass(slots=True)
class ActiveTask:
    """A task this server is running: its message, the attempt token its outcomes name, its times, and its
    cancel state."""

    msg: TaskMessage
    attempt: str  # the dequeue's token: outcomes and lease extensions name it
    started: datetime
    deadline: datetime
    lease_expiry: float  # unix s, as last written to Redis
    cancel_reason: str = ""  # "cancel" (asynq:cancel), "shutdown", "lease"; "" for a timeout
    # What stops the handler's task (it carries the deadline), set once that task exists; a cancel
    # that comes earlier is remembered and applied when it is set.
    stopper: HandlerStop | None = None
    cancel_called: bool = False
    # the handler has ended and its outcome is being written: a lease reported lost now is most
    # likely the outcome's own doing (an ack removes the lease), and there is nothing left to cancel
    handler_done: bool = False

    def attach(self, stopper: HandlerStop) -> None:
        """Give the handler's stopper once its task exists; a cancel that came earlier is applied now."""
        self.stopper = stopper
        if self.cancel_called:
            stopper.stop()

    def cancel(self) -> None:
        """Cancel the handler now if its task has started, else as soon as it does; set
        ``cancel_reason`` first to say why."""
        self.cancel_called = True
        if self.stopper is not None:
            self.stopper.stop()


class ActiveTasks:
    """The tasks this server is running, by ID: the heartbeat extends their leases, cancels find them here."""

    def __init__(self) -> None:
        self._tasks: dict[str, ActiveTask] = {}

    def add(self, task: ActiveTask) -> None:
        """Register a task that has started, under its task ID."""
        self._tasks[task.msg.id] = task

    def remove(self, task_id: str) -> None:
        """Forget a task once it is done; an unknown ID is ignored."""
        self._tasks.pop(task_id, None)

    def get(self, task_id: str) -> ActiveTask | None:
        """The running task with this ID, or None."""
        return self._tasks.get(task_id)

    def __len__(self) -> int:
        return len(self._tasks)

    def snapshot(self) -> list[ActiveTask]:
        """The running tasks now, as a list safe to iterate while tasks come and go."""
        return list(self._tasks.values())

    def by_queue(self) -> dict[str, list[ActiveTask]]:
        """The running tasks grouped by queue (queues with none left out)."""
        out: dict[str, list[ActiveTask]] = {}
        for t in self._tasks.values():
            out.setdefault(t.msg.queue, []).append(t)
        return out

    def cancel(self, task_id: str, reason: str) -> bool:
        """Cancel the task's handler, keeping an earlier cancel reason if it has one; False if it is not
        running here."""
        t = self._tasks.get(task_id)
        if t is None:
            return False
        if not t.cancel_reason:
            t.cancel_reason = reason
        t.cancel()
        return True
