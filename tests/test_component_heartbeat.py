"""server/heartbeat.py on a MemoryBroker: leases are extended per queue under each task's attempt,
side by side so a stalled node cannot let the other nodes' leases run out; a task whose attempt was
taken over, or whose lease ran out, is cancelled with the "lease" reason so it reports nothing; the
server's record is written each beat and withdrawn at the end.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
import pytest
from testbroker import MemoryBroker, make_message

from asynq_aio._task import Task
from asynq_aio.server.acker import Acker
from asynq_aio.server.active import ActiveTask, ActiveTasks
from asynq_aio.server.config import Config
from asynq_aio.server.heartbeat import Heartbeat, Identity
from asynq_aio.server.processor import Processor
from asynq_aio.server.stopper import HandlerStop

pytestmark = pytest.mark.anyio

CFG = Config(queues={"a": 1, "b": 1}, lease_duration=30, heartbeat_interval=5, concurrency=8)


def identity() -> Identity:
    return Identity("worker-host", 4242, "server-1", datetime.now(tz=UTC))


async def running(
    broker: MemoryBroker, active: ActiveTasks, queue: str, n: int, *, lease_for: float = 10
) -> list[ActiveTask]:
    """``n`` tasks of ``queue`` dequeued (leased for ``lease_for`` s) and registered as running."""
    for _ in range(n):
        broker.enqueue(make_message(queue, task_type="long"))
    got = await broker.dequeue(queue, n, time.time() + lease_for)
    assert isinstance(got, list) and len(got) == n
    now = datetime.now(tz=UTC)
    out = []
    for d in got:
        t = ActiveTask(
            msg=broker.queue(queue).message(d.task_id),
            attempt=d.attempt,
            started=now,
            deadline=now,
            lease_expiry=math.ceil(time.time() + lease_for),
        )
        active.add(t)
        out.append(t)
    return out


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not cond():
            await anyio.sleep(0.001)


async def test_a_beat_extends_every_queues_leases_under_their_attempts() -> None:
    broker, active = MemoryBroker(), ActiveTasks()
    tasks = await running(broker, active, "a", 2) + await running(broker, active, "b", 1)
    before = time.time()
    await Heartbeat(broker, CFG, active, identity()).beat()
    after = time.time()
    for t in tasks:
        lease = broker.lease_of(t.msg.queue, t.msg.id)
        assert lease is not None and math.ceil(before + 30) <= lease <= math.ceil(after + 30)
        assert t.lease_expiry == lease and not t.cancel_called
    # one call per queue, every task of it in that call
    assert (broker.calls_on("extend_leases", "a"), broker.calls_on("extend_leases", "b")) == (1, 1)
    assert broker.calls["extend_leases"] == 2


async def test_a_stalled_queue_does_not_hold_up_the_other_queues_leases() -> None:
    broker, active = MemoryBroker(), ActiveTasks()
    (ta,) = await running(broker, active, "a", 1)  # a comes first in the active set
    (tb,) = await running(broker, active, "b", 1)
    stored, expiry = broker.lease_of("a", ta.msg.id), ta.lease_expiry
    stall = broker.stall("extend_leases", queue="a")
    hb = Heartbeat(broker, CFG, active, identity())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hb.beat)
            await stall.entered.wait()
            await until(lambda: tb.lease_expiry > math.ceil(time.time() + 20))
            assert (broker.lease_of("a", ta.msg.id), ta.lease_expiry) == (stored, expiry)
            stall.release()
    assert ta.lease_expiry > expiry and broker.lease_of("a", ta.msg.id) == ta.lease_expiry
    assert not ta.cancel_called and not tb.cancel_called


async def test_a_task_whose_attempt_was_taken_over_is_cancelled_for_its_lease() -> None:
    broker, active = MemoryBroker(), ActiveTasks()
    lost, kept = await running(broker, active, "a", 2)
    broker.queue("a").tasks[lost.msg.id].attempt = "another-server-7"  # recovered and run elsewhere
    old = broker.lease_of("a", lost.msg.id)
    handler = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    lost.stopper = HandlerStop(handler, None)
    with anyio.fail_after(5):
        await anyio.wait_all_tasks_blocked()
        await Heartbeat(broker, CFG, active, identity()).beat()
        with pytest.raises(asyncio.CancelledError):
            await handler
    assert (lost.cancel_reason, lost.cancel_called) == ("lease", True)
    assert (kept.cancel_reason, kept.cancel_called) == ("", False)
    assert broker.lease_of("a", kept.msg.id) == kept.lease_expiry
    assert broker.lease_of("a", lost.msg.id) == old  # the other attempt's lease is left alone


async def test_a_taken_over_handler_is_stopped_and_its_processor_writes_nothing() -> None:
    broker, active = MemoryBroker(), ActiveTasks()
    msg = broker.enqueue(make_message("a", task_type="long"))
    started, cancelled = anyio.Event(), anyio.Event()

    async def handler(task: Task) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    acker = Acker(broker)
    processor = Processor(broker, CFG.with_(queues={"a": 1}, idle_wait=0.05), handler, active, acker)
    hb = Heartbeat(broker, CFG, active, identity())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(acker.run)
            tg.start_soon(processor.fetch_loop, tg)
            await started.wait()
            broker.queue("a").tasks[msg.id].attempt = "another-server-7"
            await hb.beat()
            await cancelled.wait()
            processor.stop_fetching()
            await processor.wait_idle()
            acker.close()
    q = broker.queue("a")
    assert broker.applied == [] and broker.runs == []
    assert q.active == [msg.id] and q.tasks[msg.id].attempt == "another-server-7"
    assert (q.processed, q.failed) == (0, 0)


async def test_a_lease_that_already_ran_out_is_not_extended_but_its_task_cancelled() -> None:
    """By then another server may own the task: extending it would take it back."""
    broker, active = MemoryBroker(), ActiveTasks()
    (t,) = await running(broker, active, "a", 1)
    t.lease_expiry = time.time() - 1
    await Heartbeat(broker, CFG, active, identity()).beat()
    assert t.cancel_reason == "lease"
    assert broker.calls["extend_leases"] == 0


async def test_when_extending_fails_only_the_tasks_whose_lease_ran_out_meanwhile_are_cancelled() -> None:
    broker, active = MemoryBroker(), ActiveTasks()
    short, long = await running(broker, active, "a", 2)
    short.lease_expiry = time.time() + 0.05  # runs out while the failing call is under way
    expiry, stored = long.lease_expiry, broker.lease_of("a", long.msg.id)
    broker.delay("extend_leases", 0.1)
    broker.fail("extend_leases")
    await Heartbeat(broker, CFG, active, identity()).beat()
    assert (short.cancel_reason, long.cancel_reason) == ("lease", "")
    assert (long.lease_expiry, broker.lease_of("a", long.msg.id)) == (expiry, stored)


async def test_the_server_record_is_written_each_beat_and_cleared_at_the_end() -> None:
    broker, active = MemoryBroker(), ActiveTasks()
    tasks = await running(broker, active, "a", 2)
    hb = Heartbeat(broker, CFG, active, identity())
    before = time.time()
    await hb.beat()
    ((server, workers, expires),) = broker.servers.values()
    assert (server.host, server.pid, server.server_id) == ("worker-host", 4242, "server-1")
    assert (server.status, server.concurrency, server.active_worker_count) == ("active", 8, 2)
    assert server.queues == {"a": 1, "b": 1}
    assert sorted(w.task_id for w in workers) == sorted(t.msg.id for t in tasks)
    assert {w.task_type for w in workers} == {"long"} and {w.queue for w in workers} == {"a"}
    assert int(before + 10) <= expires <= int(time.time() + 10)  # twice the interval, 10 s at least

    hb.status = "closed"
    active.remove(tasks[0].msg.id)
    await hb.beat()
    ((server, workers, _),) = broker.servers.values()
    assert (server.status, server.active_worker_count, len(workers)) == ("closed", 1, 1)
    await hb.clear()
    assert broker.servers == {}


async def test_a_failing_server_write_neither_raises_nor_stops_the_leases() -> None:
    broker, active = MemoryBroker(), ActiveTasks()
    (t,) = await running(broker, active, "a", 1)
    broker.fail("write_server_state", times=None)
    broker.fail("clear_server_state", times=None)
    hb = Heartbeat(broker, CFG, active, identity())
    await hb.beat()
    await hb.clear()
    assert broker.servers == {} and t.lease_expiry >= math.ceil(time.time() + 29)
    assert broker.lease_of("a", t.msg.id) == t.lease_expiry
    assert (broker.calls["write_server_state"], broker.calls["clear_server_state"]) == (1, 1)


async def test_a_task_whose_outcome_is_being_written_is_not_reported_as_taken_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The ack of a finished handler removes its lease; a beat that extends leases between that ack
    and the task leaving the active set finds the lease gone. That is not a take-over: no warning,
    no cancel (the handler has ended). A running handler in the same state is still cancelled."""
    broker, active = MemoryBroker(), ActiveTasks()
    finishing, running_one = await running(broker, active, "a", 2)
    finishing.handler_done = True
    for t in (finishing, running_one):
        broker.queue("a").tasks[t.msg.id].attempt = "acked-or-elsewhere"  # the lease is no longer ours
    with caplog.at_level("WARNING", logger="asynq_aio.server"):
        await Heartbeat(broker, CFG, active, identity()).beat()
    assert (finishing.cancel_reason, finishing.cancel_called) == ("", False)
    assert (running_one.cancel_reason, running_one.cancel_called) == ("lease", True)
    warned = [r.getMessage() for r in caplog.records if "no longer owns" in r.getMessage()]
    assert warned == [
        f"task {running_one.msg.id}: this attempt no longer owns it (its lease was taken over); cancelling"
    ]
