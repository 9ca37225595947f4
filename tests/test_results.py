"""A handler's return value is its task's result, and a caller can wait for it (single Redis and
cluster): stored where Go's ResultWriter puts it, kept for Config.result_retention, typed through a
TaskDef, and the waiter wakes on the worker's notification rather than by polling."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from conftest import RedisTarget
from pydantic import BaseModel
from workerproc import RawRedis, conn_opt

import asynq_aio._waiting
from asynq_aio import (
    Client,
    Config,
    Inspector,
    InvalidTaskError,
    ServeMux,
    Server,
    Task,
    TaskDef,
    TaskFailedError,
    TaskNotFoundError,
)
from asynq_aio.protocol.codec import decode_task_message
from asynq_aio.protocol.keys import queue_keys

pytestmark = pytest.mark.anyio


class Doubled(BaseModel):
    value: int
    note: str


class Number(BaseModel):
    n: int


double = TaskDef("double", Number, result_type=Doubled)


def mux() -> ServeMux:
    m = ServeMux()

    @double.handler(m)
    async def doubled(p: Number) -> Doubled:
        return Doubled(value=2 * p.n, note=f"doubled {p.n}")

    async def text(task: Task) -> str:
        return "hello " + task.payload.decode()

    async def nothing(task: Task) -> None:
        return None

    async def unstorable(task: Task) -> object:
        return object()

    async def boom(task: Task) -> None:
        raise RuntimeError("it broke")

    for name, fn in (("text", text), ("nothing", nothing), ("unstorable", unstorable), ("boom", boom)):
        m.handle_func(name, fn)
    return m


@asynccontextmanager
async def worker(target: RedisTarget, queue: str, **config: Any) -> AsyncIterator[None]:
    cfg = Config(queues={queue: 1}, concurrency=4, forward_interval=0.1, **config)
    with anyio.fail_after(30):
        async with Server(conn_opt(target.kind, target.url, target.addrs), cfg).serve(mux()):
            yield


async def test_the_return_value_is_the_result_and_the_task_is_kept_for_it(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    info = await client.enqueue(Task("text", b"world"), queue=unique_queue)
    none = await client.enqueue(Task("nothing"), queue=unique_queue)
    kept = await client.enqueue(Task("nothing"), queue=unique_queue, retention=60)
    async with anyio.create_task_group() as tg:
        waited: dict[str, bytes | None] = {}

        async def wait_for(task_id: str) -> None:
            waited[task_id] = await client.wait_result(task_id, queue=unique_queue, timeout=10)

        tg.start_soon(wait_for, none.id)  # waiting before it runs: it leaves no trace when done
        await anyio.sleep(0.2)
        async with worker(redis_target, unique_queue):
            assert await client.wait_result(info, timeout=10) == b"hello world"
            assert await client.wait_result(kept, timeout=10) is None  # completed, returned nothing
    assert waited == {none.id: None}
    qk = queue_keys(unique_queue)
    # kept as completed for result_retention (600 s) although it was enqueued without a retention
    assert await raw.cmd("HGET", qk.task(info.id), "result") == b"hello world"
    expires = float(await raw.cmd("ZSCORE", qk.completed, info.id))
    assert 590 <= expires - time.time() <= 601
    assert decode_task_message(await raw.cmd("HGET", qk.task(info.id), "msg")).retention == 600
    async with Inspector(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)) as insp:
        assert (await insp.get_task_info(unique_queue, info.id)).result == b"hello world"
    # a handler that returned nothing leaves nothing behind (no retention, no result)
    assert await raw.cmd("EXISTS", qk.task(none.id)) == 0


async def test_a_typed_result_and_result_retention_zero(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    info = await double.enqueue(client, Number(n=21), queue=unique_queue, retention=60)
    gone = await client.enqueue(Task("text", b"x"), queue=unique_queue)
    async with worker(redis_target, unique_queue, result_retention=0):
        got = await double.wait_result(client, info, timeout=10)
        assert got == Doubled(value=42, note="doubled 21")
        with anyio.fail_after(10):
            while await raw.cmd("EXISTS", queue_keys(unique_queue).task(gone.id)):
                await anyio.sleep(0.05)
    # result_retention=0 and no retention: the task and its result are gone once it ran
    with pytest.raises(TaskNotFoundError):
        await client.wait_result(gone, timeout=1)


async def test_failures_reach_the_waiter(
    client: Client, redis_target: RedisTarget, unique_queue: str
) -> None:
    bad = await client.enqueue(Task("unstorable"), queue=unique_queue, max_retry=3)
    boom = await client.enqueue(Task("boom"), queue=unique_queue, max_retry=0)
    async with worker(redis_target, unique_queue):
        with pytest.raises(TaskFailedError, match="cannot be stored as a result") as e1:
            await client.wait_result(bad, timeout=10)  # archived at once: retrying repeats the work
        assert "object" in e1.value.last_error
        with pytest.raises(TaskFailedError, match="it broke"):
            await client.wait_result(boom, timeout=10)


async def test_bad_waits(client: Client, unique_queue: str) -> None:
    with pytest.raises(TaskNotFoundError):
        await client.wait_result("no-such-task", queue=unique_queue, timeout=1)
    with pytest.raises(InvalidTaskError, match="needs the task's queue"):
        await client.wait_result("some-id")
    pending = await client.enqueue(Task("text", b"nobody runs me"), queue=unique_queue)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="pending"):
        await client.wait_result(pending, timeout=0.3)
    assert time.monotonic() - started < 2


async def test_the_waiter_wakes_on_the_notification_not_the_fallback_poll(
    redis_target: RedisTarget, client: Client, unique_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the fallback re-read pushed to 30 s, only the published completion can end the wait
    in time."""
    monkeypatch.setattr(asynq_aio._waiting, "POLL", 30.0)
    infos = [await client.enqueue(Task("text", str(i).encode()), queue=unique_queue) for i in range(5)]
    async with worker(redis_target, unique_queue):
        with anyio.fail_after(10):
            results = [await client.wait_result(i) for i in infos]
    assert results == [f"hello {i}".encode() for i in range(5)]


async def test_a_late_result_of_a_stale_attempt_writes_nothing(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """write_result is fenced like every outcome: a superseded attempt's result does not land on the
    task another attempt runs, and a gone task does not come back as a stray hash."""
    qk = queue_keys(unique_queue)
    info = await client.enqueue(Task("text", b"x"), queue=unique_queue)
    (taken,) = await client._broker.dequeue(unique_queue, 1, time.time() + 60)  # type: ignore[misc]
    assert await client._broker.write_result(unique_queue, info.id, b"old", attempt="someone-else") is False
    assert await raw.cmd("HGET", qk.task(info.id), "result") is None
    assert await client._broker.write_result(unique_queue, info.id, b"mine", attempt=taken.attempt) is True
    assert await client._broker.write_result(unique_queue, "gone", b"x", attempt="") is False
    assert await raw.cmd("EXISTS", qk.task("gone")) == 0
