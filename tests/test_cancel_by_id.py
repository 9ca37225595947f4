"""Status and cancel by task ID alone (single Redis and cluster): Asynq keeps no ID-to-queue index,
so the inspector asks every registered queue; cancel signals a running task and deletes a waiting
one, and says which it did."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from conftest import RedisTarget
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import (
    Client,
    Config,
    FailedPreconditionError,
    Inspector,
    ServeMux,
    Server,
    Task,
    TaskNotFoundError,
    TaskState,
)
from asynq_aio.protocol.keys import queue_keys

pytestmark = pytest.mark.anyio


async def test_find_a_task_by_its_id_in_any_queue(
    redis_target: RedisTarget, client: Client, unique_queue: str
) -> None:
    others = [f"{unique_queue}_{i}" for i in range(3)]
    for q in others:
        await client.enqueue(Task("t"), queue=q)
    wanted = await client.enqueue(Task("t", b"me"), queue=others[1], process_in=timedelta(hours=1))
    async with Inspector(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)) as insp:
        found = await insp.find_task(wanted.id)
        assert (found.queue, found.state, found.payload) == (others[1], TaskState.SCHEDULED, b"me")
        with pytest.raises(TaskNotFoundError, match="not found in any queue"):
            await insp.find_task("no-such-id")
        # the same caller-chosen ID in two queues: ambiguous, the caller must name the queue
        await client.enqueue(Task("t"), queue=others[0], task_id="twice")
        await client.enqueue(Task("t"), queue=others[2], task_id="twice")
        with pytest.raises(FailedPreconditionError, match="is in 2 queues"):
            await insp.find_task("twice")


async def test_cancel_deletes_a_waiting_task_and_signals_a_running_one(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    qk = queue_keys(unique_queue)
    pending = await client.enqueue(Task("wait"), queue=f"{unique_queue}_idle")
    scheduled = await client.enqueue(Task("wait"), queue=f"{unique_queue}_idle", process_in=3600)
    for info in (pending, scheduled):
        done = await client.cancel(info.id)
        assert (done.action, done.state, done.queue) == ("deleted", info.state, info.queue)
        assert await raw.cmd("EXISTS", queue_keys(info.queue).task(info.id)) == 0
    with pytest.raises(TaskNotFoundError):
        await client.cancel(pending.id)

    started = anyio.Event()
    cancelled = anyio.Event()
    mux = ServeMux()

    async def long(task: Task) -> None:
        started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    mux.handle_func("long", long)
    running = await client.enqueue(Task("long"), queue=unique_queue, max_retry=3)
    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    cfg = Config(queues={unique_queue: 1}, concurrency=1, retry_delay_func=lambda n, e, t: 3600.0)
    with anyio.fail_after(20):
        async with Server(opt, cfg).serve(mux):
            await started.wait()
            done = await client.cancel(running.id)
            assert (done.action, done.state) == ("signalled", TaskState.ACTIVE)
            await cancelled.wait()

            async def in_retry() -> bool:
                return await raw.cmd("ZSCORE", qk.retry, running.id) is not None

            await wait_until(in_retry, 10, what="the cancelled task in retry")

    finished = await client.enqueue(Task("t"), queue=unique_queue, retention=60)
    await raw.cmd("LREM", qk.pending, 0, finished.id)
    await raw.cmd("HSET", qk.task(finished.id), "state", "completed")
    await raw.cmd("ZADD", qk.completed, 9999999999, finished.id)
    with pytest.raises(FailedPreconditionError, match="already finished"):
        await client.cancel(finished.id)
