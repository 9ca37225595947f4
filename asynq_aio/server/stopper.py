"""Stopping one handler at its deadline or on request, and keeping it stopped: level-triggered
cancellation for a plain asyncio task.

asyncio's own cancellation is edge-triggered: ``Task.cancel()`` raises ``CancelledError`` at one
await, and a handler (or a library under it) that catches it and carries on is never stopped
again; its task would run past its timeout with its lease extended by the heartbeat. anyio's cancel
scopes re-deliver the cancellation at every await until the scope is left, but entering one per
task in the hottest path mixed two concurrency models there and cost more than the task itself. So
a handler runs as a plain asyncio task and a :class:`HandlerStop` does what the scope did: once
stopped, the task is cancelled again at each step it takes until it ends.
"""

from __future__ import annotations

import asyncio
from typing import Any


class HandlerStop:
    """Cancels ``task`` at loop time ``deadline`` (None: no deadline) or when :meth:`stop` is called,
    and again at each of its following steps until it has ended.

    The re-delivery runs once per event-loop iteration, and only between a stop and the task's end,
    which is what a handler that swallows its cancellation costs (as under an anyio scope)."""

    __slots__ = ("_loop", "_task", "_timer", "called")

    def __init__(self, task: asyncio.Task[Any], deadline: float | None) -> None:
        self._task = task
        self._loop = task.get_loop()
        self.called = False  # stop() was called (by the deadline or a request)
        self._timer = self._loop.call_at(deadline, self.stop) if deadline is not None else None
        task.add_done_callback(self._ended)

    def stop(self) -> None:
        """Stop the task now; it stays stopped (a caught cancellation is raised again at its next step)."""
        if self.called:
            return
        self.called = True
        self._deliver()

    def _deliver(self) -> None:
        if self._task.done():
            return
        self._task.cancel()
        # Queued after the task's own wake-up: the task sees this cancellation first, and if it
        # catches it and waits again, this call finds it waiting and cancels that wait too.
        self._loop.call_soon(self._deliver)

    def _ended(self, _: asyncio.Task[Any]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
