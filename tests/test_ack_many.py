"""The batched hot path: ``ack_many.lua`` (one script call acks a batch of one queue's successes) and
the dequeue tail (a short dequeue must not cap the next one), on a single Redis and on a cluster.

The processor's tests cover these through a running server; these pin down the storage effects
and the "safe to run twice" promise directly: a re-sent batch, or an ID named twice, changes nothing.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from workerproc import RawRedis, q

from asynq_aio import Client, Task
from asynq_aio.protocol.broker import Broker, Dequeued
from asynq_aio.protocol.codec import TaskMessage, decode_task_message

pytestmark = pytest.mark.anyio


async def take(broker: Broker, queue: str, count: int) -> list[Dequeued]:
    got = await broker.dequeue(queue, count, math.ceil(time.time() + 60))
    assert isinstance(got, list)
    return got


async def counter(raw: RawRedis, key: str) -> int:
    return int(await raw.cmd("GET", key) or 0)


async def test_ack_many_writes_each_outcome_once(client: Client, raw: RawRedis, unique_queue: str) -> None:
    k = q(unique_queue)
    broker = client._broker
    plain = await client.enqueue(Task("t", b"plain"), queue=unique_queue)
    locked = await client.enqueue(Task("t", b"locked"), queue=unique_queue, unique=300)
    kept = await client.enqueue(Task("t", b"kept"), queue=unique_queue, retention=600)
    got = await take(broker, unique_queue, 3)
    msgs: list[TaskMessage] = [decode_task_message(d.raw) for d in got]
    assert [m.id for m in msgs] == [plain.id, locked.id, kept.id]
    lock_key = msgs[1].unique_key
    assert await raw.cmd("GET", lock_key) == locked.id.encode()

    op = broker.ack_many_op(unique_queue, msgs)
    assert await broker.run([op]) == [[1, 1, 1]]

    assert await raw.cmd("EXISTS", k(f"t:{plain.id}"), k(f"t:{locked.id}")) == 0
    assert await raw.cmd("EXISTS", lock_key) == 0  # released: it still named this task
    assert await raw.cmd("HGET", k(f"t:{kept.id}"), "state") == b"completed"
    stored = decode_task_message(await raw.cmd("HGET", k(f"t:{kept.id}"), "msg"))
    assert stored.completed_at > 0
    assert await raw.cmd("ZSCORE", k("completed"), kept.id) is not None
    assert await raw.cmd("LLEN", k("active")) == 0
    assert await raw.cmd("ZCARD", k("lease")) == 0
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert await counter(raw, k("processed")) == 3
    assert await counter(raw, k(f"processed:{today}")) == 3
    assert await raw.cmd("TTL", k(f"processed:{today}")) > 0

    # a re-sent batch (the transport retries after a lost reply) is a no-op, counters included
    assert await broker.run([op]) == [[0, 0, 0]]
    assert await counter(raw, k("processed")) == 3
    assert await raw.cmd("HGET", k(f"t:{kept.id}"), "state") == b"completed"


async def test_ack_many_counts_an_id_named_twice_once(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    k = q(unique_queue)
    await client.enqueue(Task("t", b"x"), queue=unique_queue)
    (item,) = await take(client._broker, unique_queue, 1)
    msg = decode_task_message(item.raw)
    assert await client._broker.run([client._broker.ack_many_op(unique_queue, [msg, msg])]) == [[1, 0]]
    assert await counter(raw, k("processed")) == 1


async def test_ack_many_leaves_a_lock_that_another_task_holds(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    await client.enqueue(Task("t", b"u"), queue=unique_queue, unique=300)
    (item,) = await take(client._broker, unique_queue, 1)
    msg = decode_task_message(item.raw)
    await raw.cmd("SET", msg.unique_key, "someone-else")
    assert await client._broker.run([client._broker.ack_many_op(unique_queue, [msg])]) == [[1]]
    assert await raw.cmd("GET", msg.unique_key) == b"someone-else"


async def test_a_short_dequeue_does_not_cap_the_next(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """One freed slot fetches one task; the next fetch for 20 must still get 20 in order."""
    infos = await client.enqueue_many([Task("t", str(i).encode()) for i in range(40)], queue=unique_queue)
    ids = [i.id for i in infos if not isinstance(i, Exception)]
    assert len(ids) == 40
    broker = Broker(client._broker.transport)  # a fresh tail cache, as in a new worker
    first = await take(broker, unique_queue, 1)
    second = await take(broker, unique_queue, 20)
    third = await take(broker, unique_queue, 32)
    assert [d.task_id for d in first + second + third] == ids  # oldest first, none skipped
    assert (len(first), len(second), len(third)) == (1, 20, 19)
    assert await raw.cmd("LLEN", q(unique_queue)("active")) == 40


async def test_a_wake_up_names_the_tail_so_the_dequeue_reads_no_list(
    client: Client, raw: RawRedis, unique_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle worker's wake-up reports the oldest pending task; the dequeue that follows names it
    directly (no LRANGE round trip first) and still takes every task in order."""
    broker = Broker(client._broker.transport)  # an idle worker's broker: no tail known
    assert await broker.wait_for_work(unique_queue, 0.1) is False  # empty: times out
    infos = await client.enqueue_many([Task("t", str(i).encode()) for i in range(3)], queue=unique_queue)
    ids = [i.id for i in infos if not isinstance(i, Exception)]
    assert await broker.wait_for_work(unique_queue, 2.0) is True
    sent: list[str] = []
    real_call = broker.transport.call

    async def recording_call(*args: Any, **kw: Any) -> Any:
        sent.append(str(args[0]))
        return await real_call(*args, **kw)

    monkeypatch.setattr(broker.transport, "call", recording_call)
    got = await take(broker, unique_queue, 10)
    assert [d.task_id for d in got] == ids
    assert "LRANGE" not in sent
    assert await raw.cmd("LLEN", q(unique_queue)("pending")) == 0


async def test_a_lock_in_another_slot_does_not_fail_the_batch(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """A foreign producer wrote a unique_key under another queue's hash tag (another cluster slot):
    the batch is acked (that task's lock is left to its TTL) instead of failing with CROSSSLOT."""
    k = q(unique_queue)
    foreign_lock = "asynq:{some_other_queue}:unique:t:abc"
    a = await client.enqueue(Task("t", b"a"), queue=unique_queue)
    b = await client.enqueue(Task("t", b"b"), queue=unique_queue)
    msg = decode_task_message(await raw.cmd("HGET", k(f"t:{b.id}"), "msg"))
    msg.unique_key = foreign_lock
    await raw.cmd("HSET", k(f"t:{b.id}"), "msg", msg.SerializeToString())
    await raw.cmd("SET", foreign_lock, b.id, "EX", 300)
    try:
        got = await take(client._broker, unique_queue, 2)
        msgs = [decode_task_message(d.raw) for d in got]
        assert msgs[1].unique_key == foreign_lock
        attempts = [d.attempt for d in got]
        assert await client._broker.run(
            [client._broker.ack_many_op(unique_queue, msgs, attempts=attempts)]
        ) == [[1, 1]]
        assert await raw.cmd("EXISTS", k(f"t:{a.id}"), k(f"t:{b.id}")) == 0
        assert await raw.cmd("GET", foreign_lock) == b.id.encode()  # not ours to release
        one = await client.enqueue(Task("t", b"c"), queue=unique_queue)
        (d,) = await take(client._broker, unique_queue, 1)
        single = decode_task_message(d.raw)
        single.unique_key = foreign_lock
        assert await client._broker.run([client._broker.ack_op(single, attempt=d.attempt)]) == [1]
        assert d.task_id == one.id
    finally:
        await raw.cmd("DEL", foreign_lock)
