"""Extends the leases of running tasks and publishes server/worker info in Asynq's format.

A task whose lease could not be extended before it ran out is cancelled here: by then another server
may have recovered it, and two copies must not both report an outcome. Each queue's leases are
extended concurrently with the others, within a time budget, so one stalled master cannot make the
leases on healthy masters run out.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio

from asynq_aio.protocol.codec import ServerRecord, WorkerRecord
from asynq_aio.server.active import ActiveTask, ActiveTasks
from asynq_aio.server.config import Config
from asynq_aio.server.fanout import BudgetExceeded, within
from asynq_aio.server.served import ServedQueues
from asynq_aio.server.storage import WorkerBroker

log = logging.getLogger("asynq_aio.server")


@dataclass(slots=True)
class Identity:
    """Who this server is in Redis: host, pid and server ID name its heartbeat keys (Go's ``asynq server ls``
    shows them), with its start time."""

    host: str
    pid: int
    server_id: str
    started: datetime

    @classmethod
    def new(cls, host: str | None, server_id: str) -> Identity:
        """This process's identity: ``host`` (or the hostname), the current pid, and now as its start time."""
        return cls(host or socket.gethostname(), os.getpid(), server_id, datetime.now(tz=UTC))


class Heartbeat:
    """The server's periodic beat: extends the leases of its running tasks (cancelling those it lost) and
    writes its server and worker records. The record lists the concrete queues served now (``served``,
    the live set a worker with queue patterns keeps), never a pattern: Go's CLI and asynqmon read it."""

    def __init__(
        self,
        broker: WorkerBroker,
        config: Config,
        active: ActiveTasks,
        ident: Identity,
        served: ServedQueues | None = None,
    ) -> None:
        self._broker = broker
        self._config = config
        self._active = active
        self._ident = ident
        self._served = ServedQueues(config.queues, config.shards) if served is None else served
        self.status = "active"

    def server_record(self) -> ServerRecord:
        """The server's heartbeat record as it stands now (``status`` and the running-task count included)."""
        return ServerRecord(
            host=self._ident.host,
            pid=self._ident.pid,
            server_id=self._ident.server_id,
            concurrency=self._config.concurrency,
            queues=self._served.weights(),
            strict_priority=self._config.strict_priority,
            status=self.status,
            started=self._ident.started,
            active_worker_count=len(self._active),
        )

    @property
    def call_budget(self) -> float:
        """Longest one Redis call of a beat may take. Half the margin between a lease's length and
        the beat's period: a beat that waited this long on a stalled node still extends the other
        nodes' leases long before they run out."""
        return max(0.5, (self._config.lease_duration - self._config.heartbeat_interval) / 2)

    async def beat(self) -> None:
        """Extend every queue's leases concurrently, each within :attr:`call_budget`, then write the
        server info within it too: a stalled or slow master delays only its own queues' leases."""
        await self._extend_leases()
        try:
            await within(self.call_budget, self._write_info())
        except BudgetExceeded as exc:
            log.error("writing server info: %s; skipped this beat", exc)

    async def _extend_leases(self) -> None:
        now = time.time()
        until = math.ceil(now + self._config.lease_duration)
        async with anyio.create_task_group() as tg:
            for queue, all_tasks in self._active.by_queue().items():
                # A lease that already ran out may belong to another server by now: never extend it.
                tasks = []
                for t in all_tasks:
                    if t.lease_expiry <= now:
                        self._active.cancel(t.msg.id, "lease")
                    else:
                        tasks.append(t)
                if tasks:
                    tg.start_soon(self._extend_queue, queue, tasks, until)

    async def _extend_queue(self, queue: str, tasks: list[ActiveTask], until: float) -> None:
        owned = [(t.msg.id, t.attempt) for t in tasks]
        try:
            lost = set(await within(self.call_budget, self._broker.extend_leases(queue, owned, until)))
        except Exception as exc:
            log.error("could not extend leases in %s: %s", queue, exc, extra={"queue": queue})
            for t in tasks:
                if t.lease_expiry <= time.time():
                    self._active.cancel(t.msg.id, "lease")
            return
        for t in tasks:
            if t.msg.id in lost and t.handler_done:
                continue  # its outcome was written between our read and the extension: not lost
            if t.msg.id in lost:
                # recovered by another server (or run by another attempt): stop this copy now
                log.warning(
                    "task %s: this attempt no longer owns it (its lease was taken over); cancelling",
                    t.msg.id,
                    extra={"queue": queue, "task_id": t.msg.id},
                )
                self._active.cancel(t.msg.id, "lease")
            else:
                t.lease_expiry = until

    async def _write_info(self) -> None:
        workers = [
            WorkerRecord(
                host=self._ident.host,
                pid=self._ident.pid,
                server_id=self._ident.server_id,
                task_id=t.msg.id,
                task_type=t.msg.type,
                task_payload=t.msg.payload,
                queue=t.msg.queue,
                started=t.started,
                deadline=t.deadline,
            )
            for t in self._active.snapshot()
        ]
        ttl = max(self._config.heartbeat_interval * 2, 10.0)
        try:
            await self._broker.write_server_state(self.server_record(), workers, ttl)
        except Exception as exc:
            log.error("could not write server info: %s", exc)

    async def run(self) -> None:
        """Beat every ``heartbeat_interval`` seconds until cancelled."""
        while True:
            await self.beat()
            await anyio.sleep(self._config.heartbeat_interval)

    async def clear(self) -> None:
        """Remove the server's records from Redis at shutdown; a failure is logged, not raised."""
        try:
            await self._broker.clear_server_state(self.server_record())
        except Exception as exc:
            log.error("could not clear server info: %s", exc)
