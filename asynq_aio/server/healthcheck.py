"""Periodically pings Redis and tells the application (``Config.health_check_func``) how it went,
so a service can report readiness from its worker's view of Redis."""

from __future__ import annotations

import inspect
import logging

import anyio

from asynq_aio.protocol.session import RedisSession
from asynq_aio.server.config import HealthCheckFunc

log = logging.getLogger("asynq_aio.server")


async def health_check_loop(session: RedisSession, func: HealthCheckFunc, interval: float) -> None:
    """Every ``interval`` seconds, check that Redis is ready and call ``func`` with None or the error; an
    exception from ``func`` is logged, not raised. Runs until cancelled."""
    while True:
        error: Exception | None = None
        try:
            await session.check_ready()
        except Exception as exc:
            error = exc
        try:
            res = func(error)
            if inspect.isawaitable(res):
                await res
        except Exception as exc:
            log.error("health_check_func raised: %s", exc)
        await anyio.sleep(interval)
