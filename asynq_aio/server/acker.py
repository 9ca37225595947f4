"""Batches task outcomes (ack, retry, archive, requeue) into one pipeline per flush, per queue.

Handlers finish at different moments; sending each outcome on its own costs a round trip per task.
Here every outcome that arrives while a queue's batch is in flight joins that queue's next batch
(the coalescer of coalescer.py, the same one the client's enqueues go through), so under load many
tasks share a round trip and at idle a single outcome goes out at once. Successes
go further: a queue's whole batch is one ``ack_many`` script call, so Redis runs one script (not
one per task) and the client packs and parses one command.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio

from asynq_aio._coalescer import Coalescer
from asynq_aio.protocol.broker import Op
from asynq_aio.protocol.codec import TaskMessage
from asynq_aio.server.storage import WorkerBroker

log = logging.getLogger("asynq_aio.server")

MAX_BATCH = 512  # outcomes per pipeline
MAX_ACKS_PER_CALL = 256  # successes per ack_many script call (keeps each script run short)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One task's outcome: a success (``msg`` and the ``attempt`` that ran it, written with the
    queue's other successes in one ack_many call) or any other outcome as a ready ``op``."""

    op: Op | None = None
    msg: TaskMessage | None = None
    attempt: str = ""


class Acker:
    """Outcomes are written per queue, each queue through its own coalescer: a queue's keys live on
    one node, so a stalled or slow node delays only its own queues' outcomes, never another
    queue's (one shared pipeline waited for its slowest node, and every later flush waited behind
    it)."""

    def __init__(self, broker: WorkerBroker) -> None:
        self._broker = broker
        self._lanes: dict[str, Coalescer[_Outcome, Any]] = {}
        self._closed = False
        self._all_closed: asyncio.Event | None = None

    def _lane(self, queue: str) -> Coalescer[_Outcome, Any]:
        lane = self._lanes.get(queue)
        if lane is None:
            # shielded: a write under way finishes even while the server stops (an outcome still
            # queued when its submitter is cancelled is dropped; the task keeps its lease and is
            # recovered; no server path cancels a submitter today)
            lane = self._lanes[queue] = Coalescer(
                partial(self._write, queue), max_batch=MAX_BATCH, max_inflight=1, shield=True
            )
        return lane

    async def _submit(self, queue: str, outcome: _Outcome) -> Any:
        if self._closed:
            raise anyio.ClosedResourceError("the acker is closed")
        try:
            return await self._lane(queue).submit(outcome)
        except Exception as exc:  # the outcome's own error, handed back as a value
            return exc

    async def submit(self, queue: str, op: Op) -> Any:
        """Write ``op`` (an outcome of a task of ``queue``), alone or with others of the queue;
        returns the script's reply or error."""
        return await self._submit(queue, _Outcome(op=op))

    async def submit_ack(self, msg: TaskMessage, attempt: str) -> Any:
        """Write the success of ``msg`` (run by ``attempt``); returns 1 (acked), 0 (no longer this
        attempt's: already acked or recovered elsewhere) or the error."""
        return await self._submit(msg.queue, _Outcome(msg=msg, attempt=attempt))

    def close(self) -> None:
        """Refuse new outcomes (a submit then raises ClosedResourceError) and let :meth:`run` return once
        every queued one is written."""
        self._closed = True
        if self._all_closed is not None:
            self._all_closed.set()

    async def run(self) -> None:
        """Until :meth:`close`, then until every queued outcome is written. If this is cancelled
        (the server is torn down), what is still queued is failed."""
        self._all_closed = asyncio.Event()
        if self._closed:
            self._all_closed.set()
        try:
            await self._all_closed.wait()
            while busy := [lane for lane in self._lanes.values() if lane.busy]:
                for lane in busy:
                    await lane.drain()
        finally:
            for lane in self._lanes.values():
                if lane.busy:
                    with anyio.CancelScope(shield=True):
                        await lane.aclose(grace=0)

    async def _write(self, queue: str, outcomes: list[_Outcome]) -> list[Any]:
        """One pipeline for a batch of one queue's outcomes: the ops as they are, the successes in
        ack_many calls of at most MAX_ACKS_PER_CALL (one queue's keys: one slot, one node)."""
        op_at = [i for i, o in enumerate(outcomes) if o.op is not None]
        ack_at = [i for i, o in enumerate(outcomes) if o.op is None]
        calls: list[Op] = [op for o in outcomes if (op := o.op) is not None]
        chunks = [ack_at[i : i + MAX_ACKS_PER_CALL] for i in range(0, len(ack_at), MAX_ACKS_PER_CALL)]
        for chunk in chunks:
            msgs = [m for i in chunk if (m := outcomes[i].msg) is not None]
            calls.append(self._broker.ack_many_op(queue, msgs, attempts=[outcomes[i].attempt for i in chunk]))
        try:
            results = await self._broker.run(calls)
        except Exception as exc:
            log.error("writing %d task outcome(s) of %s failed: %s", len(outcomes), queue, exc)
            raise
        out: list[Any] = [None] * len(outcomes)
        for i, r in zip(op_at, results, strict=False):
            if isinstance(r, Exception):
                log.error("task outcome not written: %s", r)
            out[i] = r
        for chunk, r in zip(chunks, results[len(op_at) :], strict=True):
            if isinstance(r, Exception):
                log.error("%d task success(es) not written: %s", len(chunk), r)
                for i in chunk:
                    out[i] = r
                continue
            for i, one in zip(chunk, r, strict=True):
                out[i] = int(one)
        return out
