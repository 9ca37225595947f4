"""App: the handlers, the server configuration and the periodic tasks of a worker, as one object.

Without it the three lived apart: the CLI worker took a mux and rebuilt a Config from its flags
(so a ``retry_delay_func`` worked embedded but not from the CLI), and periodic tasks needed a
separate process and a second API. ``asynq-aio worker module:app`` and ``app.serve()`` embedded now
run the same object, so what a developer declares in code is what every way of running it uses.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio

from asynq_aio._connection import RedisClient, RedisConnOpt, RetryPolicy
from asynq_aio._handler import Handler
from asynq_aio._mux import ServeMux
from asynq_aio._periodic import Schedule
from asynq_aio._scheduler import Scheduler
from asynq_aio.server.config import Config
from asynq_aio.server.server import Server

__all__ = ["App"]

log = logging.getLogger("asynq_aio.app")


class App:
    """A worker application: ``mux`` (or one async handler), its ``config`` and its ``schedule``.

    Without a ``config``, the worker serves ``default`` plus every queue the mux's TaskDefs name,
    so a TaskDef's tasks never wait in a queue nobody serves. With a ``config``, its queues are
    used as given (the server warns at start about a TaskDef queue it does not serve).
    """

    def __init__(
        self,
        mux: ServeMux | Handler,
        *,
        config: Config | None = None,
        schedule: Schedule | None = None,
    ) -> None:
        if not isinstance(mux, ServeMux) and (isinstance(mux, type) or not callable(mux)):
            got = f"the class {mux.__qualname__}" if isinstance(mux, type) else f"a {type(mux).__name__}"
            raise TypeError(f"App takes a ServeMux or an async handler, got {got}")
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"App's schedule must be a Schedule, got {type(schedule).__name__}")
        self.mux = mux
        self.config = config if config is not None else default_config(mux)
        self.schedule = schedule if schedule is not None else Schedule()
        self.server: Server | None = None  # the Server while serve() runs

    def __repr__(self) -> str:
        return f"App(queues={self.config.queues}, {len(self.schedule)} periodic tasks)"

    def with_config(self, **changes: Any) -> App:
        """A copy whose config has ``changes`` applied and validated (the CLI's flags use it). What
        the config left to its defaults stays unset, so a later caller can still tell it from a
        choice (the worker command turns on ``gc_freeze`` unless the App's config set it)."""
        config = Config.model_validate({**self.config.model_dump(exclude_unset=True), **changes})
        return App(self.mux, config=config, schedule=self.schedule)

    @asynccontextmanager
    async def serve(
        self,
        redis: RedisConnOpt | RedisClient,
        *,
        scheduler: bool = True,
        retry: RetryPolicy | None = None,
    ) -> AsyncIterator[App]:
        """Run the worker, and the schedule when ``scheduler`` is true and it has entries, while the
        ``async with`` body runs. Running the schedule in several processes is safe: each fire is
        enqueued once however many schedulers run it."""
        async with AsyncExitStack() as stack:
            server = Server(redis, self.config, retry=retry)
            await stack.enter_async_context(server.serve(self.mux))
            self.server = server
            stack.callback(setattr, self, "server", None)
            if scheduler and len(self.schedule):
                sched = Scheduler(redis, location=self.schedule.location, retry=retry)
                sched.add_schedule(self.schedule)
                await stack.enter_async_context(sched.serve())
                log.info("scheduling %d periodic tasks (scheduler %s)", len(self.schedule), sched.id)
            yield self

    async def run(
        self, redis: RedisConnOpt | RedisClient, *, scheduler: bool = True, retry: RetryPolicy | None = None
    ) -> None:
        """Serve until SIGINT or SIGTERM, then shut down gracefully."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with self.serve(redis, scheduler=scheduler, retry=retry):
                assert self.server is not None
                log.info("server %s started; waiting for SIGINT/SIGTERM", self.server.server_id)
                async for sig in signals:
                    log.info("received %s, shutting down", signal.Signals(sig).name)
                    break


def default_config(mux: ServeMux | Handler) -> Config:
    """``default`` plus the queues the mux's TaskDefs name, each with weight 1 (a sharded one as
    its shards, sharing that weight)."""
    if not isinstance(mux, ServeMux):
        return Config(queues={"default": 1})
    return Config(queues={"default": 1, **dict.fromkeys(mux.task_queues(), 1)}, shards=mux.task_shards())
