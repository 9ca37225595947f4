"""Batches task outcomes (ack, retry, archive, requeue) into one pipeline per flush.

Handlers finish at different moments; sending each outcome on its own costs a round trip per task.
Here every outcome that arrives while a batch is in flight joins the next batch, so under load many
tasks share a round trip and at idle a single outcome goes out at once. Successes of one queue go
further: the whole batch is one ``ack_many`` script call, so Redis runs one script (not one per task)
and the client packs and parses one command.

Plain asyncio futures rather than anyio events and streams: this is the per-task hot path, and the
server runs on asyncio (uvloop) only, like the transport below it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio

from asynq_aio.protocol.broker import Broker
from asynq_aio.protocol.codec import TaskMessage
from asynq_aio.transport import Op

log = logging.getLogger("asynq_aio.server")

MAX_BATCH = 512  # outcomes per pipeline
MAX_ACKS_PER_CALL = 256  # successes per ack_many script call (keeps each script run short)


class Acker:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._ops: list[tuple[Op, asyncio.Future[Any]]] = []
        self._acks: list[tuple[TaskMessage, str, asyncio.Future[Any]]] = []
        self._wake: asyncio.Event | None = None
        self._closed = False

    def _signal(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError("the acker is closed")

    async def submit(self, op: Op) -> Any:
        """Queue ``op`` and wait until its batch was applied; returns the script's reply or error."""
        self._check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.append((op, fut))
        self._signal()
        return await fut

    async def submit_ack(self, msg: TaskMessage, attempt: str) -> Any:
        """Queue the success of ``msg`` (run by ``attempt``) and wait until it was written; returns 1
        (acked), 0 (no longer this attempt's: already acked or recovered elsewhere) or the error."""
        self._check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks.append((msg, attempt, fut))
        self._signal()
        return await fut

    def close(self) -> None:
        self._closed = True
        self._signal()

    async def run(self) -> None:
        """Flush until :meth:`close` and every queued outcome is written."""
        self._wake = asyncio.Event()
        while True:
            if not self._ops and not self._acks:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            ops, self._ops = self._ops[:MAX_BATCH], self._ops[MAX_BATCH:]
            acks, self._acks = self._acks[:MAX_BATCH], self._acks[MAX_BATCH:]
            await self._flush(ops, acks)

    async def _flush(
        self,
        ops: list[tuple[Op, asyncio.Future[Any]]],
        acks: list[tuple[TaskMessage, str, asyncio.Future[Any]]],
    ) -> None:
        # successes grouped per queue (one script call covers one queue's keys, one cluster slot)
        by_queue: dict[str, list[tuple[TaskMessage, str, asyncio.Future[Any]]]] = {}
        for item in acks:
            by_queue.setdefault(item[0].queue, []).append(item)
        groups: list[list[tuple[TaskMessage, str, asyncio.Future[Any]]]] = []
        all_ops = [op for op, _ in ops]
        for queue, items in by_queue.items():
            for i in range(0, len(items), MAX_ACKS_PER_CALL):
                chunk = items[i : i + MAX_ACKS_PER_CALL]
                groups.append(chunk)
                all_ops.append(
                    self._broker.ack_many_op(
                        queue, [m for m, _, _ in chunk], attempts=[a for _, a, _ in chunk]
                    )
                )
        # Shielded: an outcome that reached here must be written even while the server shuts down.
        with anyio.CancelScope(shield=True):
            try:
                results = await self._broker.run(all_ops)
            except Exception as exc:
                log.error("writing %d task outcome(s) failed: %s", len(ops) + len(acks), exc)
                results = [exc] * len(all_ops)
        for (_, fut), r in zip(ops, results, strict=False):
            if isinstance(r, Exception):
                log.error("task outcome not written: %s", r)
            _resolve(fut, r)
        for chunk, r in zip(groups, results[len(ops) :], strict=True):
            if isinstance(r, Exception):
                log.error("%d task success(es) not written: %s", len(chunk), r)
                for _, _, fut in chunk:
                    _resolve(fut, r)
                continue
            for (_, _, fut), one in zip(chunk, r, strict=True):
                _resolve(fut, int(one))


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():  # the submitter may have been cancelled meanwhile
        fut.set_result(value)
