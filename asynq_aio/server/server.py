"""Server: runs a handler over the configured queues until stopped, in its own or the app's loop."""

from __future__ import annotations

import logging
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio

from asynq_aio._connection import RedisClient, RedisConnOpt, RetryPolicy
from asynq_aio._handler import Handler
from asynq_aio._mux import ServeMux, as_handler
from asynq_aio._sharding import ShardedQueue
from asynq_aio.protocol.session import RedisSession
from asynq_aio.server.acker import Acker
from asynq_aio.server.active import ActiveTasks
from asynq_aio.server.aggregator import aggregate_loop
from asynq_aio.server.canceller import cancel_loop
from asynq_aio.server.config import Config
from asynq_aio.server.forwarder import forward_loop
from asynq_aio.server.gc_freeze import freeze_after_start
from asynq_aio.server.healthcheck import health_check_loop
from asynq_aio.server.heartbeat import Heartbeat, Identity
from asynq_aio.server.janitor import janitor_loop
from asynq_aio.server.processor import Processor
from asynq_aio.server.recoverer import recover_loop
from asynq_aio.server.served import ServedQueues

log = logging.getLogger("asynq_aio.server")


class Server:
    """Fetches tasks from weighted queues and runs them with at most ``concurrency`` in flight.

    ``await server.run(mux)`` owns the process (stops on SIGINT/SIGTERM); ``async with
    server.serve(mux):`` runs inside an application that already has a loop (FastAPI lifespan).
    """

    def __init__(
        self,
        redis: RedisConnOpt | RedisClient,
        config: Config | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = config or Config()
        self._redis = redis
        self._retry = retry
        self.server_id = str(uuid.uuid4())
        self._processor: Processor | None = None
        self._running = False

    @property
    def running_tasks(self) -> int:
        """How many handlers are running now (0 when not serving)."""
        return self._processor.running if self._processor else 0

    async def run(self, handler: ServeMux | Handler) -> None:
        """Serve until SIGINT or SIGTERM, then shut down gracefully."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with self.serve(handler):
                log.info("server %s started; waiting for SIGINT/SIGTERM", self.server_id)
                async for sig in signals:
                    log.info("received %s, shutting down", signal.Signals(sig).name)
                    break

    @asynccontextmanager
    async def serve(self, handler: ServeMux | Handler) -> AsyncIterator[Server]:
        """Serve inside an application's own event loop while the ``async with`` body runs. It checks Redis
        first (and raises if it is not reachable or not ready), and raises RuntimeError if this Server is
        already serving. On exit it shuts down gracefully: handlers get ``Config.shutdown_timeout`` seconds,
        then are cancelled and their tasks requeued."""
        if self._running:
            raise RuntimeError("this Server is already serving")
        self._running = True
        h = as_handler(handler)
        cfg = self.config
        # The queues served now, one live object every per-queue component reads; with patterns in
        # Config.queues it is resolved against asynq:queues at start and every queue_discovery_interval.
        served = ServedQueues(cfg.queues, cfg.shards)
        if isinstance(handler, ServeMux):
            for pattern, queue in sorted(handler.expected_queues().items()):
                names = queue.names if isinstance(queue, ShardedQueue) else (queue,)
                if not all(served.serves(q) for q in names):
                    log.warning(
                        "tasks of %r go to queue %r, which this server does not serve (its queues: %s); "
                        "they will wait there until a server that serves it runs",
                        pattern,
                        queue,
                        ", ".join(cfg.queues),
                    )
        waits = served.watch_budget() or served.fixed_count
        session = RedisSession.open(self._redis, retry=self._retry, blocking_waits=waits)
        try:
            await session.check_ready()
            broker = session.broker()
            if served.has_patterns:
                await served.refresh(broker)
            active = ActiveTasks()
            acker = Acker(broker)
            processor = Processor(broker, cfg, h, active, acker, served)
            self._processor = processor
            heartbeat = Heartbeat(broker, cfg, active, Identity.new(cfg.host, self.server_id), served)
            queues = served
            background = anyio.CancelScope()
            handlers_done = anyio.Event()

            async def run_background() -> None:
                with background:
                    async with anyio.create_task_group() as btg:
                        btg.start_soon(heartbeat.run)
                        if served.has_patterns:
                            btg.start_soon(served.discover, broker, cfg.queue_discovery_interval)
                        btg.start_soon(forward_loop, broker, queues, cfg.forward_interval)
                        btg.start_soon(
                            partial(
                                recover_loop,
                                broker,
                                queues,
                                cfg.recovery_interval,
                                cfg.sweep_interval,
                                cfg.sweep_batch,
                                skew=cfg.recovery_skew,
                                retry_delay=cfg.retry_delay_func,
                            )
                        )
                        btg.start_soon(janitor_loop, broker, queues, cfg.janitor_interval)
                        if cfg.gc_freeze:
                            btg.start_soon(freeze_after_start)
                        btg.start_soon(cancel_loop, session, active)
                        if cfg.group_aggregator is not None:
                            btg.start_soon(aggregate_loop, session.groups(), queues, cfg)
                        if cfg.health_check_func is not None:
                            btg.start_soon(
                                health_check_loop,
                                session,
                                cfg.health_check_func,
                                cfg.health_check_interval,
                            )

            async def run_workers() -> None:
                try:
                    async with anyio.create_task_group() as wtg:
                        wtg.start_soon(processor.fetch_loop, wtg)
                finally:
                    handlers_done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(acker.run)
                tg.start_soon(run_background)
                tg.start_soon(run_workers)
                try:
                    yield self
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._shutdown(processor, handlers_done, acker, heartbeat, background)
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                await session.aclose()

    async def _shutdown(
        self,
        processor: Processor,
        handlers_done: anyio.Event,
        acker: Acker,
        heartbeat: Heartbeat,
        background: anyio.CancelScope,
    ) -> None:
        """Stop fetching; give handlers ``shutdown_timeout``; then cancel them and requeue their tasks
        at the head of pending; write every outcome; withdraw the server's heartbeat."""
        heartbeat.status = "closed"
        processor.stop_fetching()
        with anyio.move_on_after(self.config.shutdown_timeout):
            await handlers_done.wait()
        if not handlers_done.is_set():
            log.warning(
                "%d task(s) still running after %.1fs; cancelling and requeueing them",
                processor.running,
                self.config.shutdown_timeout,
            )
            processor.cancel_all_for_shutdown()
            await handlers_done.wait()
        acker.close()
        background.cancel()
        await heartbeat.clear()
