"""server/processor.py on a MemoryBroker: each handler outcome becomes the right write, under the
right attempt, and one queue's faulty node does not stop the others being fetched.

The processor runs here with a real Acker, as the server wires them; the broker is in memory, so a
handler's outcome is checked against the task's place and hash afterwards, and every write's attempt
token against the token its dequeue handed out (a write without a token would apply anyway and hide
a fencing bug). A few tests take real time because the code under test measures it: the stalled
dequeue waits out the dequeue budget (1 s at the least, not configurable) and the set-aside after it,
the slowness tests need slow calls (0.11 s each), and the lease test a dequeue of a full second.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from testbroker import Applied, MemoryBroker, make_message

from asynq_aio._errors import PayloadValidationError, RevokeTask, SkipRetry
from asynq_aio._handler import Handler
from asynq_aio._task import Task
from asynq_aio.protocol.broker import MALFORMED_TYPE
from asynq_aio.server.acker import Acker
from asynq_aio.server.active import ActiveTasks
from asynq_aio.server.config import Config
from asynq_aio.server.processor import Processor

pytestmark = pytest.mark.anyio


def config(**changes: Any) -> Config:
    base: dict[str, Any] = {
        "queues": {"a": 1},
        "concurrency": 4,
        "idle_wait": 0.05,
        "lease_duration": 30,
        "heartbeat_interval": 5,
    }
    return Config(**(base | changes))


@asynccontextmanager
async def serving(
    broker: MemoryBroker, cfg: Config, handler: Handler, active: ActiveTasks | None = None
) -> AsyncIterator[Processor]:
    """A processor and its acker, run as the server runs them; on the way out fetching stops and
    the block waits (bounded) until every handler is done and its outcome written."""
    acker = Acker(broker)
    p = Processor(broker, cfg, handler, ActiveTasks() if active is None else active, acker)

    async def fetch() -> None:
        async with anyio.create_task_group() as wtg:
            await p.fetch_loop(wtg)
        acker.close()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(acker.run)
            tg.start_soon(fetch)
            try:
                yield p
            except BaseException:
                tg.cancel_scope.cancel()
                raise
            finally:
                p.stop_fetching()


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not cond():
            await anyio.sleep(0.001)


async def nothing(task: Task) -> None:
    pass


def token_of(broker: MemoryBroker, task_id: str) -> str:
    (token,) = {d.attempt for d in broker.dequeued if d.task_id == task_id}
    return token


async def test_a_success_is_acked_under_the_dequeues_attempt() -> None:
    broker = MemoryBroker()
    plain = broker.enqueue(make_message("a", payload=b"1"))
    kept = broker.enqueue(make_message("a", payload=b"2", retention_s=60))
    seen: list[bytes] = []

    async def handler(task: Task) -> None:
        seen.append(task.payload)

    async with serving(broker, config(), handler):
        await until(lambda: broker.queue("a").processed == 2)
    assert sorted(seen) == [b"1", b"2"]
    q = broker.queue("a")
    assert q.active == [] and q.lease == {} and plain.id not in q.tasks
    assert list(q.completed) == [kept.id] and q.message(kept.id).completed_at > 0
    assert sorted(broker.applied, key=lambda x: x.task_id) == sorted(
        (Applied("ack_many", "a", t.id, token_of(broker, t.id), 1) for t in (plain, kept)),
        key=lambda x: x.task_id,
    )


async def test_an_error_is_retried_when_retry_delay_func_says() -> None:
    broker = MemoryBroker()
    msg = make_message("a", task_type="flaky")
    msg.retried = 2
    broker.enqueue(msg)
    seen: list[tuple[int, str, str]] = []

    def delay(retried: int, error: BaseException, task: Task) -> float:
        seen.append((retried, str(error), task.type))
        return 42.0

    async def handler(task: Task) -> None:
        raise ValueError("boom")

    before = time.time()
    async with serving(broker, config(retry_delay_func=delay), handler):
        await until(lambda: bool(broker.queue("a").retry))
    after = time.time()
    q = broker.queue("a")
    assert seen == [(2, "boom", "flaky")]
    assert int(before + 42) <= q.retry[msg.id] <= int(after + 42)
    stored = q.message(msg.id)
    assert (stored.retried, stored.error_msg, q.tasks[msg.id].state) == (3, "boom", "retry")
    assert (q.processed, q.failed, q.active) == (1, 1, [])
    assert broker.applied == [Applied("fail", "a", msg.id, token_of(broker, msg.id), 1)]


@pytest.mark.parametrize("error", [SkipRetry("never"), PayloadValidationError("bad payload")])
async def test_skip_retry_and_an_invalid_payload_archive_with_retries_left(error: Exception) -> None:
    broker = MemoryBroker()
    msg = broker.enqueue(make_message("a", max_retry=25))
    delays: list[int] = []

    def delay(retried: int, exc: BaseException, task: Task) -> float:
        delays.append(retried)
        return 1.0

    async def handler(task: Task) -> None:
        raise error

    cfg = config(retry_delay_func=delay)
    async with serving(broker, cfg, handler):
        await until(lambda: bool(broker.queue("a").archived))
    q = broker.queue("a")
    assert list(q.archived) == [msg.id] and q.retry == {} and delays == []
    assert (q.message(msg.id).retried, q.message(msg.id).error_msg) == (0, str(error))
    assert (q.processed, q.failed) == (1, 1)
    assert broker.applied == [Applied("fail", "a", msg.id, token_of(broker, msg.id), 1)]


async def test_the_last_retry_archives() -> None:
    broker = MemoryBroker()
    msg = make_message("a", max_retry=3)
    msg.retried = 3
    broker.enqueue(msg)

    async def handler(task: Task) -> None:
        raise ValueError("still broken")

    async with serving(broker, config(), handler):
        await until(lambda: bool(broker.queue("a").archived))
    assert broker.queue("a").retry == {} and broker.queue("a").message(msg.id).retried == 3


async def test_a_returned_value_is_stored_as_the_result_under_the_attempt_and_kept() -> None:
    """Enqueued without a retention, the task is kept as completed for Config.result_retention, or
    the ack would delete the result with it before anyone read it."""
    broker = MemoryBroker()
    msg = broker.enqueue(make_message("a"))

    async def handler(task: Task) -> dict[str, int]:
        return {"n": 1}

    before = time.time()
    async with serving(broker, config(result_retention=90), handler):
        await until(lambda: broker.queue("a").processed == 1)
    q, token = broker.queue("a"), token_of(broker, msg.id)
    assert q.tasks[msg.id].result == b'{"n":1}' and q.tasks[msg.id].state == "completed"
    assert int(before) + 90 <= q.completed[msg.id] <= int(time.time()) + 90
    assert broker.applied == [
        Applied("result", "a", msg.id, token, 1),
        Applied("ack_many", "a", msg.id, token, 1),
    ]


async def test_a_value_that_cannot_be_stored_archives_the_task() -> None:
    broker = MemoryBroker()
    msg = broker.enqueue(make_message("a", max_retry=25))

    async def handler(task: Task) -> object:
        return object()

    async with serving(broker, config(), handler):
        await until(lambda: bool(broker.queue("a").archived))
    q = broker.queue("a")
    assert q.tasks[msg.id].result is None and "cannot be stored as a result" in q.message(msg.id).error_msg


class Transient(Exception):
    pass


async def test_an_error_that_is_not_a_failure_is_retried_without_using_up_a_retry() -> None:
    """As Go: is_failure=False retries even a task out of retries, and counts nothing."""
    broker = MemoryBroker()
    msg = broker.enqueue(make_message("a", max_retry=0))

    async def handler(task: Task) -> None:
        raise Transient("try later")

    cfg = config(is_failure=lambda e: not isinstance(e, Transient), retry_delay_func=lambda n, e, t: 5.0)
    async with serving(broker, cfg, handler):
        await until(lambda: bool(broker.queue("a").retry))
    q = broker.queue("a")
    assert q.archived == {} and q.message(msg.id).retried == 0
    assert (q.processed, q.failed) == (0, 0)


async def test_a_revoked_task_is_dropped_even_with_a_retention() -> None:
    broker = MemoryBroker()
    msg = broker.enqueue(make_message("a", retention_s=60))

    async def handler(task: Task) -> None:
        raise RevokeTask("not wanted")

    async with serving(broker, config(), handler):
        await until(lambda: broker.queue("a").processed == 1)
    q = broker.queue("a")
    assert q.completed == {} and msg.id not in q.tasks and q.failed == 0
    assert broker.applied == [Applied("ack", "a", msg.id, token_of(broker, msg.id), 1)]


async def test_malformed_records_are_archived_unrun() -> None:
    broker = MemoryBroker()
    broker.put_raw("a", "garbage", b"\xff\xfe not a protobuf")
    # a valid message stored under another ID: running it would write to the other task's keys
    broker.put_raw("a", "copy", make_message("a", "original").SerializeToString())
    ran: list[Task] = []

    async def handler(task: Task) -> None:
        ran.append(task)

    async with serving(broker, config(), handler):
        await until(lambda: len(broker.queue("a").archived) == 2)
    q = broker.queue("a")
    assert ran == [] and q.active == [] and q.lease == {}
    for tid, raw in (("garbage", b"\xff\xfe not a protobuf"), ("copy", None)):
        placeholder = q.message(tid)
        assert placeholder.type == MALFORMED_TYPE
        assert placeholder.error_msg.startswith("malformed task message")
        if raw is not None:
            assert placeholder.payload == raw
    assert sorted(broker.applied, key=lambda x: x.task_id) == [
        Applied("fail", "a", tid, token_of(broker, tid), 1) for tid in ("copy", "garbage")
    ]


async def test_an_oversized_payload_is_archived_unrun() -> None:
    broker = MemoryBroker()
    msg = broker.enqueue(make_message("a", payload=b"x" * 11))
    ran: list[Task] = []

    async def handler(task: Task) -> None:
        ran.append(task)

    async with serving(broker, config(max_payload_bytes=10), handler):
        await until(lambda: bool(broker.queue("a").archived))
    assert ran == [] and "max_payload_bytes" in broker.queue("a").message(msg.id).error_msg
    assert broker.queue("a").message(msg.id).payload == b"x" * 11


async def test_never_more_handlers_run_than_the_concurrency() -> None:
    broker = MemoryBroker()
    for _ in range(12):
        broker.enqueue(make_message("a"))
    running = peak = 0

    async def handler(task: Task) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.005)
        running -= 1

    async with serving(broker, config(concurrency=3), handler):
        await until(lambda: broker.queue("a").processed == 12)
    assert peak == 3


async def test_a_failing_queue_is_set_aside_and_the_others_are_still_fetched() -> None:
    broker = MemoryBroker()
    a = broker.enqueue(make_message("a"))
    b = broker.enqueue(make_message("b"))
    broker.fail("dequeue", times=None, queue="a")
    cfg = config(queues={"a": 2, "b": 1}, strict_priority=True)  # a is always asked first
    async with serving(broker, cfg, nothing):
        await until(lambda: broker.queue("b").processed == 1)
        await anyio.sleep(0.2)  # four idle waits: a set-aside queue is not asked again meanwhile
        assert broker.calls_on("dequeue", "a") == 1
    assert broker.queue("a").pending == [a.id] and b.id not in broker.queue("b").tasks


async def test_a_stalled_queue_is_given_up_on_and_the_others_are_still_fetched() -> None:
    """A dequeue that hangs is abandoned after its budget (1 s at the least), its queue set aside,
    and the other queues served; once the set-aside ends the queue is asked again."""
    broker = MemoryBroker()
    a = broker.enqueue(make_message("a"))
    b = broker.enqueue(make_message("b"))
    stall = broker.stall("dequeue", queue="a")
    cfg = config(queues={"a": 2, "b": 1}, strict_priority=True, lease_duration=6, heartbeat_interval=1)
    async with serving(broker, cfg, nothing):
        await stall.entered.wait()
        await until(lambda: broker.queue("b").processed == 1, timeout=3)
        assert stall.waiting == 0  # the hung call was cancelled, not left running
        assert broker.queue("a").pending == [a.id]
        stall.release()
        await until(lambda: broker.queue("a").processed == 1, timeout=3)
    assert b.id not in broker.queue("b").tasks


@pytest.mark.parametrize("strict", [False, True])
async def test_a_queue_is_set_aside_for_slowness_only_after_a_streak_and_never_under_strict_order(
    strict: bool,
) -> None:
    """One slow dequeue is more likely a busy host than a slow node: only three in a row set the
    queue aside (for ten times the last one's duration), and never under strict priority, where
    a lower queue must not run while a higher one has work."""
    broker = MemoryBroker()
    for _ in range(20):
        broker.enqueue(make_message("a"))
    broker.delay("dequeue", 0.11)  # each dequeue is "slow" (over 0.1 s)
    async with serving(broker, config(concurrency=1, strict_priority=strict), nothing):
        await anyio.sleep(0.6)  # time for five dequeues if nothing sets the queue aside
        calls, processed = broker.calls["dequeue"], broker.queue("a").processed
        broker.clear_faults()
    if strict:
        assert calls >= 4 and processed >= 3
    else:
        assert (calls, processed) == (3, 3)


async def test_shutdown_requeues_running_tasks_at_the_head_of_pending() -> None:
    broker = MemoryBroker()
    first = broker.enqueue(make_message("a"))
    second = broker.enqueue(make_message("a"))
    started, cancelled = anyio.Event(), anyio.Event()

    async def handler(task: Task) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async with serving(broker, config(concurrency=1), handler) as p:
        await started.wait()
        p.stop_fetching()
        p.cancel_all_for_shutdown()
        await cancelled.wait()
    q = broker.queue("a")
    # the interrupted task is the next one out, before the one still waiting
    assert q.pending == [second.id, first.id] and q.active == [] and q.lease == {}
    assert (q.tasks[first.id].state, q.tasks[first.id].attempt) == ("pending", None)
    assert (q.processed, q.failed) == (0, 0)
    assert broker.applied == [Applied("requeue", "a", first.id, token_of(broker, first.id), 1)]


async def test_a_torn_down_fetch_loop_requeues_its_running_tasks() -> None:
    """The server's task group is cancelled (not a graceful stop): the fetch loop still cancels
    its handlers and requeues their tasks before it ends."""
    broker = MemoryBroker()
    msg = broker.enqueue(make_message("a"))
    started = anyio.Event()

    async def handler(task: Task) -> None:
        started.set()
        await anyio.sleep_forever()

    acker = Acker(broker)
    p = Processor(broker, config(), handler, ActiveTasks(), acker)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(acker.run)
            async with anyio.create_task_group() as wtg:
                wtg.start_soon(p.fetch_loop, wtg)
                await started.wait()
                wtg.cancel_scope.cancel()
            acker.close()
    assert broker.queue("a").pending == [msg.id]
    assert broker.applied == [Applied("requeue", "a", msg.id, token_of(broker, msg.id), 1)]


async def test_a_running_tasks_lease_expiry_is_the_lease_its_dequeue_wrote() -> None:
    """The heartbeat's and _finish's "lease already ran out" checks read ActiveTask.lease_expiry:
    counted from the handler's start instead, it ran a second or more past the lease in Redis after
    a slow dequeue (the lease_until is fixed before the call)."""
    broker = MemoryBroker()
    msg = broker.enqueue(make_message("a"))
    broker.delay("dequeue", 1.0, times=1)  # a slow node: within the dequeue budget (5 s here)
    active = ActiveTasks()
    started, release = anyio.Event(), anyio.Event()

    async def handler(task: Task) -> None:
        started.set()
        await release.wait()

    async with serving(broker, config(), handler, active):
        await started.wait()
        (entry,) = active.snapshot()
        believed, written = entry.lease_expiry, broker.lease_of("a", msg.id)
        release.set()
    assert believed == written


def test_the_flow_control_rules_of_a_queue_no_longer_served_are_forgotten() -> None:
    """Rules are found per queue once and cached; when the served set changes (a pattern's queue is
    deleted) the cache starts again, so it holds the queues served now, not every queue ever seen."""
    from asynq_aio.server.limits import ConcurrencyLimit
    from asynq_aio.server.served import ServedQueues

    broker = MemoryBroker()
    served = ServedQueues({"tenant:*": 1})
    cfg = config(queues={"tenant:*": 1}, limits=[ConcurrencyLimit(queue="tenant:*", limit=1)])
    p = Processor(broker, cfg, nothing, ActiveTasks(), Acker(broker), served)
    lease = time.time() + 30
    served.update(["tenant:a", "tenant:b"])
    for q in ("tenant:a", "tenant:b"):
        p._dequeue(q, 1, lease).close()  # finds the queue's rules; the call itself is not needed
    assert set(p._limit_rules) == {"tenant:a", "tenant:b"}
    served.update(["tenant:a"])  # tenant:b was deleted
    p._dequeue("tenant:a", 1, lease).close()
    assert set(p._limit_rules) == {"tenant:a"}
