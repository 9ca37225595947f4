"""server/acker.py (over coalescer.py) on a MemoryBroker: what it promises about batching, lanes,
failures, cancellation and close.

Each queue's outcomes go out through a lane of their own, so a stalled node holds up only its own
queues' outcomes; outcomes arriving while a write is in flight join the next batch; a failed write
is handed back to each of its submitters (not retried here: the transport below already retried
it); a write that started is finished even when its submitter is cancelled; close() returns only
once every queued outcome is written. Without Redis, in milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from testbroker import MemoryBroker, describe, make_message

from asynq_aio._errors import RedisUnavailableError
from asynq_aio.protocol.codec import TaskMessage
from asynq_aio.server.acker import MAX_ACKS_PER_CALL, MAX_BATCH, Acker

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def running(broker: MemoryBroker) -> AsyncIterator[Acker]:
    """An acker running as the server runs it; closed (and so flushed) on the way out."""
    acker = Acker(broker)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(acker.run)
            try:
                yield acker
            finally:
                acker.close()


async def taken(broker: MemoryBroker, queue: str, n: int) -> list[tuple[TaskMessage, str]]:
    """``n`` tasks of ``queue`` enqueued and dequeued: each message with its attempt token."""
    msgs = {broker.enqueue(make_message(queue)).id: None for _ in range(n)}
    got = await broker.dequeue(queue, n, broker.clock() + 60)
    assert isinstance(got, list) and {d.task_id for d in got} == set(msgs)
    return [(broker.queue(queue).message(d.task_id), d.attempt) for d in got]


async def test_successes_of_several_queues_are_written_one_ack_many_per_queue() -> None:
    broker = MemoryBroker()
    a, b = await taken(broker, "a", 3), await taken(broker, "b", 2)
    results: dict[str, Any] = {}

    async def ack(msg: TaskMessage, token: str) -> None:
        results[msg.id] = await acker.submit_ack(msg, token)

    async with running(broker) as acker, anyio.create_task_group() as tg:
        for msg, token in a + b:
            tg.start_soon(ack, msg, token)
    assert results == {msg.id: 1 for msg, _ in a + b}
    for name in ("a", "b"):
        q = broker.queue(name)
        assert q.active == [] and q.lease == {} and q.tasks == {}
    assert (broker.queue("a").processed, broker.queue("b").processed) == (3, 2)
    # every token went with its own task: a wrong one would have been a no-op (0)
    assert sorted((x.task_id, x.attempt) for x in broker.applied) == sorted((m.id, t) for m, t in a + b)
    assert {describe(op)[0] for ops in broker.runs for op in ops} == {"MEM_ACK_MANY"}


async def test_an_ack_of_a_stale_attempt_is_answered_0() -> None:
    broker = MemoryBroker()
    ((msg, _),) = await taken(broker, "a", 1)
    async with running(broker) as acker:
        assert await acker.submit_ack(msg, "someone-else-1") == 0
    assert broker.queue("a").active == [msg.id]


async def test_outcomes_that_arrive_during_a_write_share_the_next_one() -> None:
    broker = MemoryBroker()
    tasks = await taken(broker, "a", 11)
    stall = broker.stall("run")
    async with running(broker) as acker, anyio.create_task_group() as tg:
        tg.start_soon(acker.submit_ack, *tasks[0])
        await stall.entered.wait()  # the first outcome is being written
        for msg, token in tasks[1:]:
            tg.start_soon(acker.submit_ack, msg, token)
        await anyio.wait_all_tasks_blocked()
        stall.release()
    assert [[describe(op)[2] for op in ops] for ops in broker.runs] == [
        [[tasks[0][0].id]],
        [[msg.id for msg, _ in tasks[1:]]],
    ]
    assert broker.queue("a").processed == 11


async def test_a_stalled_queue_does_not_hold_up_another_queues_outcomes() -> None:
    broker = MemoryBroker()
    ((a_msg, a_tok),), ((b_msg, b_tok),) = await taken(broker, "a", 1), await taken(broker, "b", 1)
    (c_msg, c_tok), (d_msg, d_tok) = await taken(broker, "c", 2)
    stall = broker.stall("run", queue="a")
    a_result: list[Any] = []

    async def ack_a() -> None:
        a_result.append(await acker.submit_ack(a_msg, a_tok))

    async with running(broker) as acker, anyio.create_task_group() as tg:
        tg.start_soon(ack_a)
        await stall.entered.wait()
        # b's ack and c's other outcomes are written while a's write hangs
        assert await acker.submit_ack(b_msg, b_tok) == 1
        fail = broker.fail_op(c_msg, error="boom", archive=False, retry_at=1, attempt=c_tok)
        assert await acker.submit("c", fail) == 1
        assert await acker.submit("c", broker.requeue_op("c", d_msg.id, attempt=d_tok)) == 1
        assert a_result == [] and broker.queue("a").active == [a_msg.id]
        stall.release()
    assert a_result == [1] and broker.queue("a").active == []
    assert broker.queue("c").retry == {c_msg.id: 1.0} and broker.queue("c").pending == [d_msg.id]


async def test_a_failed_write_is_handed_to_each_submitter_and_the_lane_goes_on() -> None:
    """The acker does not retry (the transport below it already did, within its budget): each
    outcome of the failed batch gets the error, the tasks stay leased for the recoverer, and the
    next outcome of the queue is written as usual."""
    broker = MemoryBroker()
    (m0, t0), (m1, t1), (m2, t2), (m3, t3) = await taken(broker, "a", 4)
    stall = broker.stall("run")
    broker.fail("run", times=2, exc=lambda: RedisUnavailableError("node down"))
    results: dict[str, Any] = {}

    async def ack(msg: TaskMessage, token: str) -> None:
        results[msg.id] = await acker.submit_ack(msg, token)

    async def archive(msg: TaskMessage, token: str) -> None:
        results[msg.id] = await acker.submit("a", broker.fail_op(msg, error="x", archive=True, attempt=token))

    async with running(broker) as acker:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ack, m0, t0)  # written alone, and fails
            await stall.entered.wait()
            tg.start_soon(ack, m1, t1)  # these two queue behind it: one batch, which fails too
            tg.start_soon(archive, m2, t2)
            await anyio.wait_all_tasks_blocked()
            stall.release()
        assert broker.calls["run"] == 2 and broker.runs == []  # neither write got past the fault
        assert all(isinstance(r, RedisUnavailableError) for r in results.values()) and len(results) == 3
        assert broker.queue("a").lease.keys() == {m0.id, m1.id, m2.id, m3.id}
        assert await acker.submit_ack(m3, t3) == 1
        assert await acker.submit_ack(m1, t1) == 1  # the submitter may send it again itself
    assert broker.calls["run"] == 4 and broker.queue("a").processed == 2


async def test_a_lost_reply_is_an_error_to_the_submitter_though_the_write_landed() -> None:
    """The ambiguous failure: the submitter cannot tell, and a re-send is a harmless no-op (0)."""
    broker = MemoryBroker()
    ((msg, token),) = await taken(broker, "a", 1)
    broker.lose_reply("run")
    async with running(broker) as acker:
        assert isinstance(await acker.submit_ack(msg, token), RedisUnavailableError)
        assert broker.queue("a").processed == 1 and broker.queue("a").active == []
        assert await acker.submit_ack(msg, token) == 0
    assert broker.queue("a").processed == 1


async def test_a_write_under_way_is_finished_though_its_submitter_was_cancelled() -> None:
    """The write is shielded: its cancelled submitter waits for it (an outcome that reached the wire
    is not left half-known). An outcome still queued when its submitter is cancelled is not sent at
    all (coalescer.py says so): that task stays leased, for the recoverer, as after a crash."""
    broker = MemoryBroker()
    (m1, t1), (m2, t2) = await taken(broker, "a", 2)
    stall = broker.stall("run")
    callers_done = anyio.Event()

    async def callers() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(acker.submit_ack, m1, t1)
            await stall.entered.wait()
            tg.start_soon(acker.submit_ack, m2, t2)  # queued behind the write under way
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        callers_done.set()

    async with running(broker) as acker, anyio.create_task_group() as outer:
        outer.start_soon(callers)
        await stall.entered.wait()
        await anyio.wait_all_tasks_blocked()
        assert not callers_done.is_set()  # m1's submitter is held by its shielded write
        stall.release()
        await callers_done.wait()
    q = broker.queue("a")
    assert q.processed == 1 and q.active == [m2.id]
    assert [describe(op)[2] for ops in broker.runs for op in ops] == [[m1.id]]


async def test_a_torn_down_acker_fails_what_is_still_queued() -> None:
    """The server's task group is cancelled: outcomes not yet sent get an error (they were not
    written, and their tasks stay leased) instead of waiting forever."""
    broker = MemoryBroker()
    (m1, t1), (m2, t2) = await taken(broker, "a", 2)
    stall = broker.stall("run")
    acker = Acker(broker)
    results: dict[str, Any] = {}

    async def ack(msg: TaskMessage, token: str) -> None:
        results[msg.id] = await acker.submit_ack(msg, token)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            async with anyio.create_task_group() as inner:
                inner.start_soon(acker.run)
                tg.start_soon(ack, m1, t1)
                await stall.entered.wait()
                tg.start_soon(ack, m2, t2)
                await anyio.wait_all_tasks_blocked()
                inner.cancel_scope.cancel()  # acker.run torn down
            await anyio.wait_all_tasks_blocked()
            assert isinstance(results.get(m2.id), RedisUnavailableError)
            stall.release()
    assert results[m1.id] == 1
    assert broker.queue("a").active == [m2.id]


async def test_close_returns_only_once_every_queued_outcome_is_written() -> None:
    broker = MemoryBroker()
    (m1, t1), (m2, t2) = await taken(broker, "a", 2)
    ((m3, t3),) = await taken(broker, "b", 1)
    stall = broker.stall("run", queue="a")
    acker = Acker(broker)
    finished = anyio.Event()

    async def run_acker() -> None:
        await acker.run()
        finished.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_acker)
            tg.start_soon(acker.submit_ack, m1, t1)
            await stall.entered.wait()
            tg.start_soon(acker.submit_ack, m2, t2)  # waits behind the stalled write
            tg.start_soon(acker.submit_ack, m3, t3)
            await anyio.wait_all_tasks_blocked()
            acker.close()
            with pytest.raises(anyio.ClosedResourceError):
                await acker.submit_ack(m3, t3)
            await anyio.wait_all_tasks_blocked()
            assert not finished.is_set()
            stall.release()
    assert finished.is_set()
    assert broker.queue("a").processed == 2 and broker.queue("b").processed == 1


async def test_a_large_backlog_goes_out_in_bounded_pipelines_and_script_calls() -> None:
    broker = MemoryBroker()
    n = MAX_BATCH + 90
    tasks = await taken(broker, "a", n + 1)
    stall = broker.stall("run")
    async with running(broker) as acker, anyio.create_task_group() as tg:
        tg.start_soon(acker.submit_ack, *tasks[0])
        await stall.entered.wait()
        for msg, token in tasks[1:]:
            tg.start_soon(acker.submit_ack, msg, token)
        await anyio.wait_all_tasks_blocked()
        stall.release()
    sizes = [[len(describe(op)[2]) for op in ops] for ops in broker.runs]
    assert sizes == [[1], [MAX_ACKS_PER_CALL, MAX_BATCH - MAX_ACKS_PER_CALL], [90]]
    assert broker.queue("a").processed == n + 1
