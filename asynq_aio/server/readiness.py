"""Which served queues may have pending tasks, kept up to date without polling them.

A worker that serves many queues used to wait for work by blocking on every queue's pending list at
once and cancelling all the waits when one woke. Cancelling a blocked command costs its connection,
so each wake-up reconnected one connection per queue, and every fetch then asked each queue in
turn: pick-up took 54 ms at 100 queues and 211 ms at 1,000.

Here each queue is in one of two states. *Ready* queues are fetched from; a queue leaves that state
when a dequeue finds it empty. An empty queue has a watcher blocked on its pending list (the
identity ``BLMOVE`` of :meth:`WorkerBroker.wait_for_work`, which Go producers' ``LPUSH`` wakes as
well as ours); when a task arrives the watcher marks the queue ready again. Watchers are never
cancelled while the worker runs, so no wake-up costs a connection, and a fetch only asks the queues
that may have work. A paused queue's watcher polls the pause flag instead (its pending list is not
empty, so a blocking wait would return at once).

Given a live :class:`ServedQueues` (a worker with queue patterns), the set of queues follows it: a
discovered queue gets a watcher and is asked once, a dropped one's watcher is cancelled (a deleted
queue is rare, so the connection that costs does not matter).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from collections.abc import Set as AbstractSet

import anyio
from anyio.abc import TaskGroup

from asynq_aio._events import wait_set
from asynq_aio.server.served import ServedQueues
from asynq_aio.server.storage import WorkerBroker

__all__ = ["QueueReadiness"]

log = logging.getLogger("asynq_aio.server")

#: Wakes in a row that found no task before a watcher waits ``poll`` seconds between waits (a queue
#: whose pending list is not empty but hands out nothing must not spin its watcher).
FRUITLESS_LIMIT = 3
#: A watcher's first wait lasts between this part of ``block`` and all of it, the later ones between
#: WAIT_LOW of it and all of it (see ``QueueReadiness._watcher``).
FIRST_WAIT_LOW = 0.05
WAIT_LOW = 0.75


class QueueReadiness:
    """The ready set of a worker's queues, and one watcher per queue that is not in it.

    ``block`` bounds one blocking wait (a watcher re-checks its queue that often, and it is what an
    idle queue costs Redis: one command per ``block`` seconds); ``poll`` is how often a paused
    queue's watcher re-reads the pause flag, and how long a watcher backs off after a failed wait.
    ``max_waits`` caps the blocking waits held at once (the connection pool's room for them); past
    it the watchers take turns, each wait still bounded by ``block``.
    """

    def __init__(
        self,
        broker: WorkerBroker,
        queues: Iterable[str] | ServedQueues,
        *,
        block: float,
        poll: float,
        max_waits: int | None = None,
    ) -> None:
        self._broker = broker
        self._block = block
        self._poll = poll
        self._served = queues if isinstance(queues, ServedQueues) else None
        self._max_waits = max_waits
        self._limiter: anyio.CapacityLimiter | None = None
        self._tg: TaskGroup | None = None
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._queues = list(queues)
        self._ready: set[str] = set(self._queues)  # unknown at start: each is asked once
        self._watch: dict[str, anyio.Event] = {q: anyio.Event() for q in self._queues}
        self._paused: set[str] = set()
        self._fruitless: dict[str, int] = dict.fromkeys(self._queues, 0)
        self._woken: set[str] = set()  # ready because a watcher saw a task, none taken since
        self._any_ready = asyncio.Event()
        self._any_ready.set()
        self._interrupted = False  # the processor is stopping: wait_any returns at once

    @property
    def ready(self) -> AbstractSet[str]:
        """The queues that may have work: the live set, read on every fetch, so not copied (the
        fetcher reads it once, to order the queues, before any report changes it)."""
        return self._ready

    def is_ready(self, queue: str) -> bool:
        return queue in self._ready

    @property
    def watched(self) -> AbstractSet[str]:
        """The queues this tracks now (each has a watcher while :meth:`run` runs)."""
        return self._watch.keys()

    # -- what the fetcher reports -------------------------------------------------------------------

    def took(self, queue: str) -> None:
        """A dequeue from ``queue`` handed out tasks: it stays ready."""
        if queue not in self._watch:  # dropped while its dequeue ran
            return
        self._fruitless[queue] = 0
        self._woken.discard(queue)

    def empty(self, queue: str) -> None:
        """A dequeue found ``queue`` empty: its watcher waits for the next task."""
        if queue not in self._watch:
            return
        if queue in self._woken:
            self._fruitless[queue] += 1
            self._woken.discard(queue)
        self._unready(queue)

    def paused(self, queue: str) -> None:
        """``queue`` is paused: its watcher polls the pause flag until it is resumed."""
        if queue not in self._watch:
            return
        self._paused.add(queue)
        self._woken.discard(queue)
        self._unready(queue)

    def _unready(self, queue: str) -> None:
        self._ready.discard(queue)
        if not self._ready and not self._interrupted:
            self._any_ready.clear()
        self._watch[queue].set()

    def _mark_ready(self, queue: str) -> None:
        self._watch[queue] = anyio.Event()
        self._ready.add(queue)
        self._any_ready.set()

    async def wait_any(self, timeout: float) -> bool:
        """Wait until some queue is ready (or :meth:`interrupt`); False after ``timeout`` seconds."""
        return await wait_set(self._any_ready, timeout)

    def interrupt(self) -> None:
        """Wake :meth:`wait_any` now, and every later call at once, whether or not a queue is ready:
        the processor is stopping."""
        self._interrupted = True
        self._any_ready.set()

    # -- watchers -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run one watcher per queue until cancelled (following the served set when it is live)."""
        if self._max_waits is not None:
            self._limiter = anyio.CapacityLimiter(max(1, self._max_waits))
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for queue in self._queues:
                self._start_watcher(queue)
            if self._served is not None:
                tg.start_soon(self._follow, self._served)

    async def _follow(self, served: ServedQueues) -> None:
        while True:
            seen = served.version
            current = set(served)
            for queue in sorted(current.difference(self._watch)):
                self._add(queue)
            for queue in set(self._watch).difference(current):
                self._drop(queue)
            await served.wait_changed(seen)

    def _add(self, queue: str) -> None:
        """A new queue: ready (unknown, so asked once), with its watcher."""
        self._queues.append(queue)
        self._watch[queue] = anyio.Event()
        self._fruitless[queue] = 0
        self._mark_ready(queue)
        self._start_watcher(queue)

    def _drop(self, queue: str) -> None:
        """A queue no longer served: forget it and cancel its watcher."""
        scope = self._scopes.pop(queue, None)
        if scope is not None:
            scope.cancel()
        self._queues.remove(queue)
        del self._watch[queue], self._fruitless[queue]
        self._paused.discard(queue)
        self._woken.discard(queue)
        self._ready.discard(queue)
        if not self._ready and not self._interrupted:
            self._any_ready.clear()

    def _start_watcher(self, queue: str) -> None:
        assert self._tg is not None
        scope = self._scopes[queue] = anyio.CancelScope()
        self._tg.start_soon(self._run_watcher, queue, scope)

    async def _run_watcher(self, queue: str, scope: anyio.CancelScope) -> None:
        with scope:
            await self._watcher(queue)

    async def _wait(self, queue: str, timeout: float) -> bool:
        if self._limiter is None:
            return await self._broker.wait_for_work(queue, timeout)
        async with self._limiter:
            return await self._broker.wait_for_work(queue, timeout)

    async def _watcher(self, queue: str) -> None:
        # Each wait lasts a random part of ``block`` (the first anywhere in it), so the watchers'
        # waits do not all end together: started at once with one fixed ``block``, 1,000 watchers
        # re-armed together, in one wave every 5 s, and a pick-up that fell into a wave waited
        # behind it (the slowest 2% of pick-ups at 1,000 queues, 10-18 ms, ran beside 160-260
        # watcher steps).
        shortest = FIRST_WAIT_LOW
        while True:
            await self._watch[queue].wait()  # set while the queue is not ready
            if queue in self._paused:
                await anyio.sleep(self._poll)
                try:
                    if await self._broker.is_paused(queue):
                        continue
                except Exception as exc:
                    log.debug("reading the pause flag of %s failed: %s", queue, exc)
                    continue
                self._paused.discard(queue)
                self._mark_ready(queue)  # resumed: ask it (it may hold tasks)
                continue
            if self._fruitless[queue] >= FRUITLESS_LIMIT:
                # Its list keeps waking the watcher but the dequeues get nothing (other workers
                # win every race, or records the dequeue skips): look again later, not at once.
                await anyio.sleep(self._poll)
                self._fruitless[queue] = 0
            try:
                woke = await self._wait(queue, self._block * random.uniform(shortest, 1.0))
                shortest = WAIT_LOW
            except Exception as exc:  # its node is down or failing over: the fetcher reports that
                log.debug("waiting on %s failed: %s", queue, exc)
                await anyio.sleep(self._poll)
                woke = True  # let the fetcher try it and set it aside if it still fails
            if woke:
                self._woken.add(queue)
                self._mark_ready(queue)
