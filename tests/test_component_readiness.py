"""server/readiness.py through the processor, on a MemoryBroker: a fetch asks only the queues that may
have work, an empty queue is watched by one wait that is never cancelled and re-issued for every
wake-up elsewhere, a paused queue is polled instead of spun on, and a queue that wakes its watcher
without handing out tasks is looked at less often.

These are the properties that keep pick-up flat in the number of queues a worker serves; they are
counted here in calls, not timed (tests/test_many_queues.py checks them on real Redis, and
benchmarks/many_queues.py measures the latency)."""

from __future__ import annotations

import random
import time

import anyio
import pytest
from test_component_processor import config, nothing, serving, until
from testbroker import MemoryBroker, make_message

from asynq_aio import RedisClientOpt
from asynq_aio.protocol._redis.clients import EXTRA_CONNECTIONS
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.broker import Dequeued, Paused
from asynq_aio.server.processor import WATCH_BLOCK
from asynq_aio.server.readiness import FIRST_WAIT_LOW, FRUITLESS_LIMIT, WAIT_LOW

pytestmark = pytest.mark.anyio

QUEUES = [f"q{i}" for i in range(200)]


async def test_a_fetch_asks_only_the_queues_that_may_have_work() -> None:
    broker = MemoryBroker()
    cfg = config(queues=dict.fromkeys(QUEUES, 1), idle_wait=0.05)
    rng = random.Random(5)
    started = time.monotonic()
    async with serving(broker, cfg, nothing):
        # start-up: every queue asked once, found empty, and given its watcher
        await until(lambda: broker.calls["wait_for_work"] >= len(QUEUES))
        dequeues, waits = broker.calls["dequeue"], broker.calls["wait_for_work"]
        assert dequeues == len(QUEUES) and waits == len(QUEUES)
        for n in range(1, 21):
            broker.enqueue(make_message(rng.choice(QUEUES)))
            await until(lambda n=n: sum(broker.queue(q).processed for q in QUEUES) == n)  # type: ignore[misc]
        await anyio.sleep(0.1)  # idle waits pass: nothing may be asked meanwhile
    # per task: the dequeue that took it, the one that found its queue empty again, and a new wait
    # on that queue; the old way asked every queue in turn and re-issued every wait at each wake-up
    assert broker.calls["dequeue"] - dequeues <= 2 * 20
    # a watcher's wait also ends on its own: the first within FIRST_WAIT_LOW to all of WATCH_BLOCK
    # seconds, the later ones after at least WAIT_LOW of it
    elapsed = time.monotonic() - started
    timed_out = 0
    if elapsed >= FIRST_WAIT_LOW * WATCH_BLOCK:
        timed_out = len(QUEUES) * (1 + int(elapsed / (WAIT_LOW * WATCH_BLOCK)))
    assert broker.calls["wait_for_work"] - waits <= 20 + timed_out


async def test_a_paused_queue_is_polled_not_spun_on_and_served_once_resumed() -> None:
    broker = MemoryBroker()
    held = broker.enqueue(make_message("a"))
    broker.pause("a")
    cfg = config(queues={"a": 1, "b": 1}, idle_wait=0.05)
    async with serving(broker, cfg, nothing):
        broker.enqueue(make_message("b"))
        await until(lambda: broker.queue("b").processed == 1)
        await anyio.sleep(0.5)  # ten pause polls
        assert broker.calls_on("dequeue", "a") == 1  # asked once, answered PAUSED, then polled
        assert 1 <= broker.calls_on("is_paused", "a") <= 15
        assert broker.queue("a").pending == [held.id]
        broker.unpause("a")
        await until(lambda: broker.queue("a").processed == 1)


class NothingFrom(MemoryBroker):
    """A broker whose ``stuck`` queue has a pending task that no dequeue hands out (what another
    worker winning every race looks like from here)."""

    async def dequeue(self, queue: str, count: int, lease_until: float) -> list[Dequeued] | Paused:
        if queue == "stuck":
            self._count("dequeue", [queue])
            return []
        return await super().dequeue(queue, count, lease_until)


async def test_a_queue_that_wakes_its_watcher_without_tasks_is_looked_at_less_often() -> None:
    broker = NothingFrom()
    broker.enqueue(make_message("stuck"))
    cfg = config(queues={"stuck": 1, "other": 1}, idle_wait=0.1)
    started = time.monotonic()
    async with serving(broker, cfg, nothing):
        await anyio.sleep(1.0)
        broker.enqueue(make_message("other"))  # the other queue is still served
        await until(lambda: broker.queue("other").processed == 1)
    # without the back-off the watcher's wait returns at once, every time: thousands a second;
    # with it, at most FRUITLESS_LIMIT + 1 waits per back-off of idle_wait (0.1 s)
    backoffs = (time.monotonic() - started) / 0.1 + 2
    assert broker.calls_on("wait_for_work", "stuck") <= (FRUITLESS_LIMIT + 1) * backoffs


async def test_a_lost_wait_or_pause_reply_does_not_strand_the_queue() -> None:
    """A watcher whose wait loses its reply (the node dropped the connection, failed over) lets the
    fetcher ask the queue, and a pause flag read that fails is read again: the tasks still run."""
    broker = MemoryBroker()
    broker.lose_reply("wait_for_work", times=1, queue="a")
    broker.fail("is_paused", times=2, queue="b")
    broker.enqueue(make_message("b"))
    broker.pause("b")
    cfg = config(queues={"a": 1, "b": 1}, idle_wait=0.05)
    async with serving(broker, cfg, nothing):
        await until(lambda: broker.calls_on("wait_for_work", "a") >= 1)
        broker.enqueue(make_message("a"))
        await until(lambda: broker.queue("a").processed == 1)
        await until(lambda: broker.calls_on("is_paused", "b") >= 3)  # two failed reads, then one
        assert broker.queue("b").processed == 0
        broker.unpause("b")
        await until(lambda: broker.queue("b").processed == 1)
    # the wait whose reply was lost, then a new one once the queue was found empty again
    assert broker.calls_on("wait_for_work", "a") >= 2


class RecordsWaits(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.wait_timeouts: list[float] = []

    async def wait_for_work(self, queue: str, timeout: float) -> bool:
        self.wait_timeouts.append(timeout)
        return await super().wait_for_work(queue, timeout)


class WaitsReturnAtOnce(MemoryBroker):
    """Every blocking wait returns empty-handed at once, its timeout recorded per queue."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: dict[str, list[float]] = {}

    async def wait_for_work(self, queue: str, timeout: float) -> bool:
        self.waits.setdefault(queue, []).append(timeout)
        await anyio.sleep(0.001)
        return False


async def test_the_watchers_waits_end_at_random_points_so_many_queues_do_not_re_arm_together() -> None:
    """With one fixed wait, 1,000 watchers started together re-armed in the same few milliseconds
    every 5 s. Each first wait lies anywhere in the block, the later ones in its last quarter."""
    broker = WaitsReturnAtOnce()
    queues = {f"q{i}": 1 for i in range(50)}
    async with serving(broker, config(queues=queues, idle_wait=1.0), nothing):
        await until(lambda: len(broker.waits) == 50 and all(len(w) >= 3 for w in broker.waits.values()))
    firsts = [w[0] for w in broker.waits.values()]
    later = [t for w in broker.waits.values() for t in w[1:]]
    assert all(FIRST_WAIT_LOW * WATCH_BLOCK <= t <= WATCH_BLOCK for t in firsts)
    assert min(firsts) < WATCH_BLOCK / 2 < max(firsts)  # spread over the block, not bunched
    assert all(WAIT_LOW * WATCH_BLOCK <= t <= WATCH_BLOCK for t in later)
    assert len(set(later)) > len(later) // 2


async def test_an_idle_queue_costs_one_wait_per_watch_block_and_the_pool_has_room_for_each() -> None:
    """What docs/concepts.md states: a watcher's wait lasts at most WATCH_BLOCK (5 s) unless idle_wait
    is longer, a blocking wait stays under half the read timeout, and the pool makes room for one
    blocked wait per served queue."""
    broker = RecordsWaits()
    async with serving(broker, config(queues={"a": 1}, idle_wait=1.0), nothing):
        await until(lambda: bool(broker.wait_timeouts))
    assert FIRST_WAIT_LOW * WATCH_BLOCK <= broker.wait_timeouts[0] <= WATCH_BLOCK == 5.0
    broker = RecordsWaits()
    async with serving(broker, config(queues={"a": 1}, idle_wait=6.0), nothing):
        await until(lambda: bool(broker.wait_timeouts))
    assert FIRST_WAIT_LOW * 6.0 <= broker.wait_timeouts[0] <= 6.0

    opt = RedisClientOpt(addr="127.0.0.1:1", read_timeout=4.0, pool_size=10)
    transport = Transport.connect(opt, blocking_waits=1000)
    try:
        assert transport.max_block == 2.0
        pool = transport.client.connection_pool  # type: ignore[union-attr]
        assert pool.max_connections == 10 + EXTRA_CONNECTIONS + 1000
    finally:
        await transport.aclose()
