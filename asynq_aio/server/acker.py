"""Batches task outcomes (ack, retry, archive, requeue) into one pipeline per flush.

Handlers finish at different moments; sending each outcome on its own costs a round trip per task.
Here every outcome that arrives while a batch is in flight joins the next batch, so under load many
tasks share a round trip and at idle a single outcome goes out at once.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from asynq_aio.protocol.broker import Broker
from asynq_aio.transport import Op

log = logging.getLogger("asynq_aio.server")

MAX_BATCH = 512


class _Pending:
    __slots__ = ("done", "op", "result")

    def __init__(self, op: Op) -> None:
        self.op = op
        self.done = anyio.Event()
        self.result: Any = None


class Acker:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        send, recv = anyio.create_memory_object_stream[_Pending](max_buffer_size=10_000)
        self._send: MemoryObjectSendStream[_Pending] = send
        self._recv: MemoryObjectReceiveStream[_Pending] = recv

    async def submit(self, op: Op) -> Any:
        """Queue ``op`` and wait until its batch was applied; returns the script's reply or error."""
        item = _Pending(op)
        await self._send.send(item)
        await item.done.wait()
        return item.result

    def close(self) -> None:
        self._send.close()

    async def run(self) -> None:
        """Flush until :meth:`close` and every queued outcome is written."""
        async with self._recv:
            while True:
                try:
                    first = await self._recv.receive()
                except anyio.EndOfStream:
                    return
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._recv.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await self._flush(batch)

    async def _flush(self, batch: list[_Pending]) -> None:
        # Shielded: an outcome that reached here must be written even while the server shuts down.
        with anyio.CancelScope(shield=True):
            try:
                results = await self._broker.run([p.op for p in batch])
            except Exception as exc:
                log.error("writing %d task outcome(s) failed: %s", len(batch), exc)
                results = [exc] * len(batch)
        for p, r in zip(batch, results, strict=True):
            if isinstance(r, Exception):
                log.error("task outcome not written: %s", r)
            p.result = r
            p.done.set()
