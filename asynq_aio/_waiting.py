"""Waiting for a task's outcome without polling Redis in a loop.

``wait_result`` flags the task hash (scripts/watch_task.lua); the scripts that complete or archive
a flagged task publish its key on ``asynq-aio:done``, which one subscription per client listens to
for all its waiters. A Go worker does not publish, and a message can be lost with a connection, so
each waiter also re-reads the task once per ``POLL`` seconds: an outcome is seen at the latest then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from asynq_aio._errors import TaskFailedError, TaskNotFoundError
from asynq_aio._events import wait_set
from asynq_aio.protocol.broker import Broker
from asynq_aio.protocol.codec import decode_task_message
from asynq_aio.protocol.keys import DONE_CHANNEL, queue_keys
from asynq_aio.protocol.session import RedisSession

log = logging.getLogger("asynq_aio.client")

#: The fallback re-read of a waited-for task: bounds how late an outcome without a notification
#: (a Go worker, a lost message) is seen.
POLL = 1.0


class ResultWaiter:
    """The waiters of one client and the one subscription that wakes them."""

    def __init__(self, session: RedisSession, broker: Broker) -> None:
        self._session = session
        self._broker = broker
        self._waiters: dict[bytes, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None

    async def wait(self, queue: str, task_id: str, timeout: float | None) -> bytes | None:
        """The task's result once it completed (None when it stored none); raises TaskFailedError
        when it was archived, TaskNotFoundError when there is no such task, TimeoutError after
        ``timeout`` seconds."""
        key = queue_keys(queue).task(task_id).encode()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._listen()
        woken = asyncio.Event()
        self._waiters.setdefault(key, set()).add(woken)
        try:
            state = await self._broker.watch_task(queue, task_id)
            if not state:
                raise TaskNotFoundError(f'task "{task_id}" not found in queue "{queue}"')
            while True:
                fields = await self._broker.task_hash(queue, task_id)
                state = fields.get("state", b"").decode()
                if not fields:
                    # it existed when the wait began: completed without a retention (or deleted)
                    return None
                if state == "completed":
                    return fields.get("result")
                if state == "archived":
                    error = decode_task_message(fields["msg"]).error_msg if "msg" in fields else ""
                    raise TaskFailedError(
                        f'task "{task_id}" in queue "{queue}" was archived: {error}', last_error=error
                    )
                wait = POLL if deadline is None else min(POLL, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(f'task "{task_id}" did not finish within {timeout}s (state: {state})')
                await wait_set(woken, wait)
                woken.clear()
        finally:
            events = self._waiters.get(key)
            if events is not None:
                events.discard(woken)
                if not events:
                    del self._waiters[key]

    def _listen(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            async for key in self._session.subscribe(DONE_CHANNEL):
                for woken in self._waiters.get(key, ()):
                    woken.set()
        except Exception as exc:  # the waiters still re-read every POLL seconds
            log.warning("the result subscription ended: %s", exc)

    async def aclose(self) -> None:
        """Stop the subscription that wakes waiters (the owning client calls it when it closes); a wait
        started later starts it again."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
