"""Coalescing of concurrent single enqueues into shared round trips.

A web app enqueues one task per request, from many coroutines at once. Sent one by one, each task
costs a round trip, a command packed and parsed by redis-py, and a script run by Redis: the client
spends its time per task, not per byte. The batcher lets a caller that arrives while writes are in
flight join a queue instead; when a write finishes, everything queued by then goes out as one
batch through :meth:`Broker.enqueue_many` (one ``enqueue.lua`` call per queue and chunk, in
one pipeline). Under load the batches grow by themselves; alone, a caller writes at once.

What each caller sees does not change: its own task is stored, or its own error is raised
(TaskIDConflictError, DuplicateTaskError for its task; a transport error such as
RedisUnavailableError for every caller of the batch it was in). No timer: a caller never waits for
company, only for writes already in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from asynq_aio.errors import RedisUnavailableError
from asynq_aio.protocol.broker import Broker, EnqueueRequest

# Writes in flight at once (a lone caller's own write, or a batch). Two lets the next batch fill
# while one is on the wire; more split the same load into smaller batches without more throughput.
DEFAULT_MAX_INFLIGHT = 2
# Most tasks one batch takes from the queue (the broker cuts it further into script calls).
DEFAULT_MAX_BATCH = 1024


class EnqueueBatcher:
    """Shares round trips between concurrent :meth:`enqueue` calls; one per :class:`Client`."""

    def __init__(
        self,
        broker: Broker,
        *,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        max_batch: int = DEFAULT_MAX_BATCH,
        close_grace: float = 5.0,
    ) -> None:
        if max_inflight < 1 or max_batch < 1:
            raise ValueError("max_inflight and max_batch must be at least 1")
        self._broker = broker
        self._max_inflight = max_inflight
        self._max_batch = max_batch
        self._close_grace = close_grace
        self._queue: deque[tuple[EnqueueRequest, asyncio.Future[None]]] = deque()
        self._inflight = 0  # writes on the wire: lone callers' own plus flusher tasks
        self._flushers: set[asyncio.Task[None]] = set()
        self._drained: asyncio.Event | None = None  # set by aclose(): fired when nothing is left
        self._closed = False  # past aclose()'s grace: start no more flushers

    async def enqueue(self, req: EnqueueRequest) -> None:
        """Store one task; raises what :meth:`Broker.enqueue` would for it."""
        if self._closed or (self._inflight < self._max_inflight and not self._queue):
            # nothing to wait behind: write now, on the caller's own task (no added latency);
            # after aclose() too, where no flusher would pick it up (the closed transport answers)
            self._inflight += 1
            try:
                await self._broker.enqueue(req)
            finally:
                self._release()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((req, fut))
        self._kick()
        # A cancelled caller cancels only its own future: a flusher skips it if it was not sent yet
        # (so nothing is stored), or finds it done when the reply comes and leaves it alone.
        await fut

    def _release(self) -> None:
        """A write finished: let queued requests take its place, or tell aclose() all is done."""
        self._inflight -= 1
        self._kick()
        if self._drained is not None and self._inflight == 0 and not self._queue:
            self._drained.set()

    def _kick(self) -> None:
        """Start flushers for queued requests while fewer writes than allowed are in flight."""
        while self._queue and self._inflight < self._max_inflight and not self._closed:
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._flush())
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)

    async def _flush(self) -> None:
        """Send what is queued, a batch at a time, until the queue is empty."""
        batch: list[tuple[EnqueueRequest, asyncio.Future[None]]] = []
        try:
            while self._queue:
                batch = []
                while self._queue and len(batch) < self._max_batch:
                    item = self._queue.popleft()
                    if not item[1].done():  # skip callers cancelled while queued
                        batch.append(item)
                if not batch:
                    continue
                try:
                    if len(batch) == 1:
                        await self._broker.enqueue(batch[0][0])
                        outcomes: list[Exception | None] = [None]
                    else:
                        outcomes = await self._broker.enqueue_many([req for req, _ in batch])
                except Exception as exc:  # one error for the whole batch (the transport's)
                    outcomes = [exc] * len(batch)
                for (_, fut), err in zip(batch, outcomes, strict=True):
                    if fut.done():
                        continue
                    if err is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(err)
                batch = []
        except asyncio.CancelledError:
            # only aclose() cancels a flusher: its batch's outcome is unknown
            _fail(batch, "the client was closed while this write was in flight: it may or may not be stored")
            raise
        finally:
            self._release()

    async def aclose(self) -> None:
        """Let the writes in flight and those queued behind them finish (up to ``close_grace``
        seconds), so the connections are not closed under them; then cancel any flusher still
        running and fail its callers, so no flusher task outlives the client."""
        if self._inflight or self._queue:
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self._close_grace)
        self._closed = True
        left = set(self._flushers)
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
        queued = list(self._queue)
        self._queue.clear()
        _fail(queued, "the client was closed before this task was written: it is not stored")


def _fail(items: list[tuple[EnqueueRequest, asyncio.Future[None]]], why: str) -> None:
    for _, fut in items:
        if not fut.done():
            fut.set_exception(RedisUnavailableError(why))
