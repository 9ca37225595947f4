"""Batches task outcomes (ack, retry, archive, requeue) into one pipeline per flush, per queue.

Handlers finish at different moments; sending each outcome on its own costs a round trip per task.
Here every outcome that arrives while a queue's batch is in flight joins that queue's next batch, so
under load many tasks share a round trip and at idle a single outcome goes out at once. Successes
go further: a queue's whole batch is one ``ack_many`` script call, so Redis runs one script (not
one per task) and the client packs and parses one command.

Plain asyncio futures rather than anyio events and streams: this is the per-task hot path, and the
server runs on asyncio (uvloop) only, like the transport below it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio

from asynq_aio.protocol.codec import TaskMessage
from asynq_aio.server.storage import WorkerBroker
from asynq_aio.transport import Op

log = logging.getLogger("asynq_aio.server")

MAX_BATCH = 512  # outcomes per pipeline
MAX_ACKS_PER_CALL = 256  # successes per ack_many script call (keeps each script run short)


class _Lane:
    """One queue's outcomes waiting to be written, and the task that writes them."""

    __slots__ = ("acks", "ops", "task", "wake")

    def __init__(self) -> None:
        self.ops: list[tuple[Op, asyncio.Future[Any]]] = []
        self.acks: list[tuple[TaskMessage, str, asyncio.Future[Any]]] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class Acker:
    """Outcomes are written per queue, each queue on its own lane: a queue's keys live on one node,
    so a stalled or slow node delays only its own queues' outcomes, never another queue's (one
    shared pipeline waited for its slowest node, and every later flush waited behind it)."""

    def __init__(self, broker: WorkerBroker) -> None:
        self._broker = broker
        self._lanes: dict[str, _Lane] = {}
        self._closed = False
        self._all_closed: asyncio.Event | None = None

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError("the acker is closed")

    def _lane(self, queue: str) -> _Lane:
        lane = self._lanes.get(queue)
        if lane is None:
            lane = self._lanes[queue] = _Lane()
            lane.task = asyncio.get_running_loop().create_task(self._run_lane(queue, lane))
        return lane

    async def submit(self, queue: str, op: Op) -> Any:
        """Queue ``op`` (an outcome of a task of ``queue``) and wait until its batch was applied;
        returns the script's reply or error."""
        self._check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        lane = self._lane(queue)
        lane.ops.append((op, fut))
        lane.wake.set()
        return await fut

    async def submit_ack(self, msg: TaskMessage, attempt: str) -> Any:
        """Queue the success of ``msg`` (run by ``attempt``) and wait until it was written; returns 1
        (acked), 0 (no longer this attempt's: already acked or recovered elsewhere) or the error."""
        self._check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        lane = self._lane(msg.queue)
        lane.acks.append((msg, attempt, fut))
        lane.wake.set()
        return await fut

    def close(self) -> None:
        self._closed = True
        for lane in self._lanes.values():
            lane.wake.set()
        if self._all_closed is not None:
            self._all_closed.set()

    async def run(self) -> None:
        """Until :meth:`close`, then until every queued outcome is written. If this is cancelled
        (the server is torn down), the lanes are cancelled with it."""
        self._all_closed = asyncio.Event()
        if self._closed:
            self._all_closed.set()
        try:
            await self._all_closed.wait()
            while tasks := [lane.task for lane in self._lanes.values() if lane.task and not lane.task.done()]:
                await asyncio.wait(tasks)
        finally:
            for lane in self._lanes.values():
                if lane.task is not None and not lane.task.done():
                    lane.task.cancel()

    async def _run_lane(self, queue: str, lane: _Lane) -> None:
        while True:
            if not lane.ops and not lane.acks:
                if self._closed:
                    return
                lane.wake.clear()
                await lane.wake.wait()
                continue
            ops, lane.ops = lane.ops[:MAX_BATCH], lane.ops[MAX_BATCH:]
            acks, lane.acks = lane.acks[:MAX_BATCH], lane.acks[MAX_BATCH:]
            await self._flush(queue, ops, acks)

    async def _flush(
        self,
        queue: str,
        ops: list[tuple[Op, asyncio.Future[Any]]],
        acks: list[tuple[TaskMessage, str, asyncio.Future[Any]]],
    ) -> None:
        # one queue's successes: one ack_many script call per chunk (one queue's keys, one slot)
        groups: list[list[tuple[TaskMessage, str, asyncio.Future[Any]]]] = []
        all_ops = [op for op, _ in ops]
        for i in range(0, len(acks), MAX_ACKS_PER_CALL):
            chunk = acks[i : i + MAX_ACKS_PER_CALL]
            groups.append(chunk)
            msgs, attempts = [m for m, _, _ in chunk], [a for _, a, _ in chunk]
            all_ops.append(self._broker.ack_many_op(queue, msgs, attempts=attempts))
        # Shielded: an outcome that reached here must be written even while the server shuts down.
        with anyio.CancelScope(shield=True):
            try:
                results = await self._broker.run(all_ops)
            except Exception as exc:
                log.error("writing %d task outcome(s) of %s failed: %s", len(ops) + len(acks), queue, exc)
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
