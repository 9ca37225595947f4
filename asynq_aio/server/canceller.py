"""Listens on ``asynq:cancel`` (what Go's ``asynq task cancel`` publishes) and cancels the named task."""

from __future__ import annotations

import logging

from asynq_aio.protocol.keys import CANCEL_CHANNEL
from asynq_aio.protocol.session import RedisSession
from asynq_aio.server.active import ActiveTasks

log = logging.getLogger("asynq_aio.server")


async def cancel_loop(session: RedisSession, active: ActiveTasks) -> None:
    """Cancel the running tasks whose IDs are published on ``asynq:cancel``, until cancelled (the subscription
    survives connection loss); IDs not running here are ignored."""
    async for message in session.subscribe(CANCEL_CHANNEL):
        task_id = message.decode(errors="replace")
        if active.cancel(task_id, "cancel"):
            log.info("cancelling task %s on request", task_id, extra={"task_id": task_id})
