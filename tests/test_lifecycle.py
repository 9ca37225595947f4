"""Server + Client end to end: every outcome a handler can have, as it is stored in Redis."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from conftest import RedisTarget
from pydantic import BaseModel, ConfigDict, Field
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import (
    Client,
    Config,
    RevokeTask,
    ServeMux,
    Server,
    SkipRetry,
    Task,
    current_task,
)
from asynq_aio.protocol.codec import (
    TaskMessage,
    decode_server_info,
    decode_task_message,
    decode_worker_info,
)

pytestmark = pytest.mark.anyio

RETRY_DELAY = 60.0


class EmailPayload(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    to: int
    from_: int = Field(alias="from")


# -- helpers --------------------------------------------------------------------------------------


def make_server(target: RedisTarget, queues: dict[str, int], **config: Any) -> Server:
    settings: dict[str, Any] = {
        "concurrency": 2,
        "queues": queues,
        "shutdown_timeout": 2.0,
        "heartbeat_interval": 0.5,
        "forward_interval": 0.2,
        "recovery_interval": 0.5,
        "recovery_skew": 0.0,
        "retry_delay_func": lambda n, err, task: RETRY_DELAY,
    }
    settings.update(config)
    return Server(conn_opt(target.kind, target.url, target.addrs), Config(**settings))


@asynccontextmanager
async def serving(server: Server, mux: ServeMux, limit: float = 20.0) -> AsyncIterator[Server]:
    """Serve embedded, failing the test instead of hanging if anything takes over ``limit`` s."""
    with anyio.fail_after(limit):
        async with server.serve(mux) as s:
            yield s


def k(queue: str) -> Callable[[str], str]:
    return lambda suffix: f"asynq:{{{queue}}}:{suffix}"


def today() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%d")


async def hgetall(raw: RawRedis, key: str) -> dict[str, bytes]:
    reply = await raw.cmd("HGETALL", key)
    if isinstance(reply, dict):
        return {kk.decode(): bytes(v) for kk, v in reply.items()}
    return {reply[i].decode(): bytes(reply[i + 1]) for i in range(0, len(reply), 2)}


async def stored_msg(raw: RawRedis, queue: str, task_id: str) -> TaskMessage:
    return decode_task_message((await hgetall(raw, k(queue)(f"t:{task_id}")))["msg"])


async def counter(raw: RawRedis, key: str) -> int:
    v = await raw.cmd("GET", key)
    return int(v) if v is not None else 0


def in_zset(raw: RawRedis, key: str, member: str) -> Callable[[], Any]:
    async def check() -> bool:
        return await raw.cmd("ZSCORE", key, member) is not None

    return check


def gone(raw: RawRedis, key: str) -> Callable[[], Any]:
    async def check() -> bool:
        return bool(await raw.cmd("EXISTS", key) == 0)

    return check


async def assert_not_active(raw: RawRedis, queue: str, task_id: str) -> None:
    q = k(queue)
    assert task_id.encode() not in await raw.cmd("LRANGE", q("active"), 0, -1)
    assert await raw.cmd("ZSCORE", q("lease"), task_id) is None


# -- outcomes -------------------------------------------------------------------------------------


async def test_success_deletes_task_and_counts_processed(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    seen: list[tuple[str, bytes, str, int, int]] = []
    mux = ServeMux()

    async def handler(task: Task) -> None:
        ctx = current_task()
        seen.append((task.type, task.payload, ctx.queue, ctx.retry_count, ctx.max_retry))

    mux.handle_func("ok", handler)
    async with serving(make_server(redis_target, {unique_queue: 1}), mux):
        info = await client.enqueue(Task("ok", b"data"), queue=unique_queue, max_retry=7)
        await wait_until(gone(raw, q(f"t:{info.id}")), 5, what="task hash deleted")
        uniq = await client.enqueue(Task("ok", b"uniq"), queue=unique_queue, unique=600)
        await wait_until(gone(raw, q(f"t:{uniq.id}")), 5, what="unique task hash deleted")

    assert seen == [("ok", b"data", unique_queue, 0, 7), ("ok", b"uniq", unique_queue, 0, 25)]
    # success releases the unique lock, so the same task can be enqueued again at once
    assert await raw.cmd("EXISTS", uniq.unique_key) == 0
    assert await counter(raw, q("processed")) == 2
    assert await counter(raw, q(f"processed:{today()}")) == 2
    ttl = int(await raw.cmd("TTL", q(f"processed:{today()}")))
    assert 89 * 86400 <= ttl <= 90 * 86400
    assert await counter(raw, q("failed")) == 0
    assert await raw.cmd("LLEN", q("pending")) == 0
    assert await raw.cmd("LLEN", q("active")) == 0
    assert await raw.cmd("ZCARD", q("lease")) == 0
    assert await raw.cmd("ZCARD", q("completed")) == 0


async def test_retention_keeps_completed_task_with_result(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()

    async def handler(task: Task) -> None:
        await current_task().write_result(b"result-bytes")

    mux.handle_func("keep", handler)
    async with serving(make_server(redis_target, {unique_queue: 1}), mux):
        info = await client.enqueue(Task("keep", b"x"), queue=unique_queue, retention=600)
        await wait_until(in_zset(raw, q("completed"), info.id), 5, what="task completed")
    now = time.time()

    score = float(await raw.cmd("ZSCORE", q("completed"), info.id))
    assert now + 600 - 5 <= score <= now + 600 + 1
    fields = await hgetall(raw, q(f"t:{info.id}"))
    assert fields["state"] == b"completed"
    assert fields["result"] == b"result-bytes"
    msg = decode_task_message(fields["msg"])
    assert msg.retention == 600
    assert now - 5 <= msg.completed_at <= now + 1
    assert await counter(raw, q("processed")) == 1
    await assert_not_active(raw, unique_queue, info.id)


async def test_handler_error_goes_to_retry_and_counts_failure(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    delays: list[tuple[int, str, str]] = []

    async def handler(task: Task) -> None:
        raise ValueError("boom: something broke")

    def delay(n: int, err: BaseException, task: Task) -> float:
        delays.append((n, str(err), task.type))
        return RETRY_DELAY

    mux.handle_func("fails", handler)
    server = make_server(redis_target, {unique_queue: 1}, retry_delay_func=delay)
    async with serving(server, mux):
        t0 = time.time()
        info = await client.enqueue(Task("fails"), queue=unique_queue, max_retry=3)
        await wait_until(in_zset(raw, q("retry"), info.id), 5, what="task in retry")

    assert delays == [(0, "boom: something broke", "fails")]
    score = float(await raw.cmd("ZSCORE", q("retry"), info.id))
    assert t0 + RETRY_DELAY - 2 <= score <= time.time() + RETRY_DELAY + 1
    fields = await hgetall(raw, q(f"t:{info.id}"))
    assert fields["state"] == b"retry"
    msg = decode_task_message(fields["msg"])
    assert msg.retried == 1
    assert msg.error_msg == "boom: something broke"
    assert t0 - 1 <= msg.last_failed_at <= time.time() + 1
    assert await counter(raw, q("processed")) == 1
    assert await counter(raw, q("failed")) == 1
    assert await counter(raw, q(f"processed:{today()}")) == 1
    assert await counter(raw, q(f"failed:{today()}")) == 1
    await assert_not_active(raw, unique_queue, info.id)


async def test_failure_with_no_retries_left_is_archived(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()

    async def handler(task: Task) -> None:
        raise RuntimeError("permanent")

    mux.handle_func("fails", handler)
    async with serving(make_server(redis_target, {unique_queue: 1}), mux):
        t0 = time.time()
        info = await client.enqueue(Task("fails"), queue=unique_queue, max_retry=0)
        await wait_until(in_zset(raw, q("archived"), info.id), 5, what="task archived")

    score = float(await raw.cmd("ZSCORE", q("archived"), info.id))
    assert t0 - 1 <= score <= time.time() + 1
    assert await raw.cmd("ZCARD", q("retry")) == 0
    fields = await hgetall(raw, q(f"t:{info.id}"))
    assert fields["state"] == b"archived"
    msg = decode_task_message(fields["msg"])
    assert msg.error_msg == "permanent"
    assert msg.retried == 0
    assert await counter(raw, q("failed")) == 1
    await assert_not_active(raw, unique_queue, info.id)


async def test_skip_retry_archives_at_once(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    runs = 0

    async def handler(task: Task) -> None:
        nonlocal runs
        runs += 1
        raise SkipRetry("bad input, do not retry")

    mux.handle_func("skip", handler)
    async with serving(make_server(redis_target, {unique_queue: 1}), mux):
        info = await client.enqueue(Task("skip"), queue=unique_queue, max_retry=10, unique=600)
        await wait_until(in_zset(raw, q("archived"), info.id), 5, what="task archived")

    assert runs == 1
    # archiving does not release the unique lock (Asynq's rule)
    assert await raw.cmd("GET", info.unique_key) == info.id.encode()
    assert await raw.cmd("ZCARD", q("retry")) == 0
    msg = await stored_msg(raw, unique_queue, info.id)
    assert "bad input, do not retry" in msg.error_msg
    assert (await hgetall(raw, q(f"t:{info.id}")))["state"] == b"archived"
    await assert_not_active(raw, unique_queue, info.id)


async def test_revoke_task_drops_it(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()

    async def handler(task: Task) -> None:
        raise RevokeTask("no longer wanted")

    mux.handle_func("revoke", handler)
    async with serving(make_server(redis_target, {unique_queue: 1}), mux):
        info = await client.enqueue(Task("revoke"), queue=unique_queue, retention=600, unique=600)
        await wait_until(gone(raw, q(f"t:{info.id}")), 5, what="task hash deleted")

    for zset in ("archived", "retry", "completed", "scheduled", "lease"):
        assert await raw.cmd("ZCARD", q(zset)) == 0, zset
    assert await raw.cmd("LLEN", q("pending")) == 0
    assert await raw.cmd("LLEN", q("active")) == 0
    assert await counter(raw, q("failed")) == 0
    # a dropped task releases its unique lock like a deleted one
    assert await raw.cmd("EXISTS", info.unique_key) == 0


async def test_payload_validation_failure_is_archived_with_the_message(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    got: list[EmailPayload] = []

    @mux.task("email:send")
    async def send(payload: EmailPayload) -> None:
        got.append(payload)

    async with serving(make_server(redis_target, {unique_queue: 1}), mux):
        bad = await client.enqueue(Task("email:send", {"to": "nope"}), queue=unique_queue, max_retry=5)
        good = await client.enqueue(Task("email:send", {"to": 1, "from": 2}), queue=unique_queue)
        await wait_until(in_zset(raw, q("archived"), bad.id), 5, what="bad task archived")
        await wait_until(gone(raw, q(f"t:{good.id}")), 5, what="good task done")

    assert [(p.to, p.from_) for p in got] == [(1, 2)]
    msg = await stored_msg(raw, unique_queue, bad.id)
    assert "does not match EmailPayload" in msg.error_msg
    assert "to" in msg.error_msg
    assert msg.retried == 0
    assert await raw.cmd("ZCARD", q("retry")) == 0


async def test_unknown_task_type_is_retried(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()

    async def handler(task: Task) -> None:
        pass

    mux.handle_func("known", handler)
    async with serving(make_server(redis_target, {unique_queue: 1}), mux):
        info = await client.enqueue(Task("unknown:type"), queue=unique_queue)
        await wait_until(in_zset(raw, q("retry"), info.id), 5, what="task in retry")

    msg = await stored_msg(raw, unique_queue, info.id)
    assert "no handler registered for task type 'unknown:type'" in msg.error_msg
    assert msg.retried == 1


async def test_timeout_cancels_the_handler_and_retries(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    saw_cancel = False
    finished = False

    async def slow(task: Task) -> None:
        nonlocal saw_cancel, finished
        try:
            await anyio.sleep(30)
            finished = True
        except anyio.get_cancelled_exc_class():
            saw_cancel = True
            raise

    mux.handle_func("slow", slow)
    async with serving(make_server(redis_target, {unique_queue: 1}), mux):
        t0 = time.monotonic()
        info = await client.enqueue(Task("slow"), queue=unique_queue, timeout=1)
        await wait_until(in_zset(raw, q("retry"), info.id), 6, what="timed-out task in retry")
        elapsed = time.monotonic() - t0

    assert saw_cancel
    assert not finished
    assert 0.9 <= elapsed < 5
    msg = await stored_msg(raw, unique_queue, info.id)
    assert "timed out" in msg.error_msg
    assert msg.retried == 1
    assert await counter(raw, q("failed")) == 1
    await assert_not_active(raw, unique_queue, info.id)


async def test_a_sub_second_timeout_cancels_to_the_millisecond(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """timeout=0.2 stops the handler after ~0.2 s, not the whole second Go reads (and not the
    30-minute default a 0 once became). Generous bound: well under the rounded-up second."""
    q = k(unique_queue)
    mux = ServeMux()
    started: list[float] = []
    cancelled: list[float] = []

    async def slow(task: Task) -> None:
        started.append(time.monotonic())
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.append(time.monotonic())
            raise

    mux.handle_func("slow", slow)
    async with serving(make_server(redis_target, {unique_queue: 1}), mux):
        info = await client.enqueue(Task("slow"), queue=unique_queue, timeout=0.2)
        await wait_until(in_zset(raw, q("retry"), info.id), 6, what="timed-out task in retry")
    ran_for = cancelled[0] - started[0]
    assert 0.15 <= ran_for < 0.8, ran_for
    msg = await stored_msg(raw, unique_queue, info.id)
    assert msg.timeout == 1  # what Go reads
    assert msg.error_msg == "task timed out after 0.2s"


async def test_a_fractional_delay_keeps_its_fraction(
    redis_target: RedisTarget, client: Client, unique_queue: str
) -> None:
    """process_in=0.8 keeps its fraction in the scheduled score (a whole-second score would be due
    up to a second early: int(now + 0.8) is at most now), and the forwarder sleeps until exactly
    that score: forward_interval is 5 s here, so only the due time can wake it in time."""
    mux = ServeMux()
    ran_at: list[float] = []

    async def handler(task: Task) -> None:
        ran_at.append(time.monotonic())

    mux.handle_func("later", handler)
    t0 = time.monotonic()
    await client.enqueue(Task("later"), queue=unique_queue, process_in=0.8)
    async with serving(make_server(redis_target, {unique_queue: 1}, forward_interval=5.0), mux):
        with anyio.fail_after(6):
            while not ran_at:
                await anyio.sleep(0.01)
    delay = ran_at[0] - t0
    assert 0.75 <= delay < 1.6, delay


async def test_retries_run_again_until_exhausted_then_archive(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    attempts: list[tuple[int, int]] = []

    async def handler(task: Task) -> None:
        ctx = current_task()
        attempts.append((ctx.retry_count, ctx.max_retry))
        raise ValueError(f"attempt {ctx.retry_count} failed")

    mux.handle_func("flaky", handler)
    server = make_server(redis_target, {unique_queue: 1}, retry_delay_func=lambda n, e, t: 0.0)
    async with serving(server, mux):
        info = await client.enqueue(Task("flaky"), queue=unique_queue, max_retry=2)
        await wait_until(in_zset(raw, q("archived"), info.id), 8, what="task archived after retries")

    assert attempts == [(0, 2), (1, 2), (2, 2)]
    msg = await stored_msg(raw, unique_queue, info.id)
    assert msg.retried == 2
    assert msg.error_msg == "attempt 2 failed"
    assert await counter(raw, q("processed")) == 3
    assert await counter(raw, q("failed")) == 3
    assert await raw.cmd("ZCARD", q("retry")) == 0


async def test_deadline_cancels_the_handler(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    finished = False

    async def slow(task: Task) -> None:
        nonlocal finished
        await anyio.sleep(30)
        finished = True

    mux.handle_func("slow", slow)
    async with serving(make_server(redis_target, {unique_queue: 1}), mux):
        deadline = datetime.fromtimestamp(time.time() + 1.2, tz=UTC)
        info = await client.enqueue(Task("slow"), queue=unique_queue, deadline=deadline)
        await wait_until(in_zset(raw, q("retry"), info.id), 6, what="task past its deadline in retry")

    assert not finished
    msg = await stored_msg(raw, unique_queue, info.id)
    assert "deadline" in msg.error_msg
    assert msg.retried == 1


async def test_paused_queue_is_skipped_until_unpaused(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    ran: list[str] = []

    async def handler(task: Task) -> None:
        ran.append(current_task().id)

    mux.handle_func("p", handler)
    assert await client._broker.pause(unique_queue)
    info = await client.enqueue(Task("p"), queue=unique_queue)
    async with serving(make_server(redis_target, {unique_queue: 1}, idle_wait=0.2), mux):
        await anyio.sleep(0.6)
        assert ran == []
        assert await raw.cmd("LRANGE", q("pending"), 0, -1) == [info.id.encode()]
        assert await client._broker.unpause(unique_queue)
        await wait_until(gone(raw, q(f"t:{info.id}")), 5, what="task run after unpause")

    assert ran == [info.id]


async def test_janitor_deletes_completed_tasks_after_retention(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()

    async def handler(task: Task) -> None:
        pass

    mux.handle_func("short", handler)
    async with serving(make_server(redis_target, {unique_queue: 1}, janitor_interval=0.2), mux):
        info = await client.enqueue(Task("short"), queue=unique_queue, retention=1)
        await wait_until(in_zset(raw, q("completed"), info.id), 5, what="task completed")
        await wait_until(gone(raw, q(f"t:{info.id}")), 5, what="completed task deleted by the janitor")

    assert await raw.cmd("ZCARD", q("completed")) == 0


async def test_scheduled_task_runs_when_due(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    ran_at: list[float] = []

    async def handler(task: Task) -> None:
        ran_at.append(time.time())

    mux.handle_func("later", handler)
    async with serving(make_server(redis_target, {unique_queue: 1}, forward_interval=0.2), mux):
        t0 = time.time()
        info = await client.enqueue(Task("later"), queue=unique_queue, process_in=1)
        t1 = time.time()
        score = float(await raw.cmd("ZSCORE", q("scheduled"), info.id))
        assert (await hgetall(raw, q(f"t:{info.id}")))["state"] == b"scheduled"

        async def ran() -> bool:
            return bool(ran_at)

        await wait_until(ran, 4, what="scheduled task ran")
        await wait_until(gone(raw, q(f"t:{info.id}")), 3, what="scheduled task acked")

    # the score is the due time to the millisecond (Go writes whole seconds and reads either)
    assert round(t0 + 1, 3) <= score <= round(t1 + 1, 3)
    assert ran_at[0] >= score
    assert ran_at[0] - t0 < 2.5


async def test_concurrency_is_a_hard_bound(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    mux = ServeMux()
    running = 0
    max_running = 0
    done = 0

    async def handler(task: Task) -> None:
        nonlocal running, max_running, done
        running += 1
        max_running = max(max_running, running)
        try:
            await anyio.sleep(0.2)
        finally:
            running -= 1
            done += 1

    mux.handle_func("work", handler)
    await client.enqueue_many([Task("work", str(i)) for i in range(20)], queue=unique_queue)
    async with serving(make_server(redis_target, {unique_queue: 1}, concurrency=3), mux) as server:

        async def all_done() -> bool:
            assert server.running_tasks <= 3
            return done == 20

        await wait_until(all_done, 10, interval=0.02, what="20 tasks done")

    assert max_running == 3
    assert await counter(raw, k(unique_queue)("processed")) == 20


async def test_strict_priority_drains_the_higher_queue_first(
    redis_target: RedisTarget, client: Client, unique_queue: str
) -> None:
    hi, lo = unique_queue + "_hi", unique_queue + "_lo"
    mux = ServeMux()
    order: list[str] = []

    async def handler(task: Task) -> None:
        order.append(current_task().queue)

    mux.handle_func("p", handler)
    await client.enqueue_many([Task("p") for _ in range(8)], queue=lo)
    await client.enqueue_many([Task("p") for _ in range(8)], queue=hi)
    server = make_server(redis_target, {lo: 1, hi: 5}, concurrency=1, strict_priority=True)
    async with serving(server, mux):

        async def all_done() -> bool:
            return len(order) == 16

        await wait_until(all_done, 10, what="16 tasks done")

    assert order == [hi] * 8 + [lo] * 8


async def test_weighted_selection_follows_weights(
    redis_target: RedisTarget, client: Client, unique_queue: str
) -> None:
    """Weights 6:1, one slot, both queues full: of the first 70 tasks about 60 come from the heavy
    queue. The bound (at least 48) fails when the weights are ignored (a fair coin reaches 48 of
    70 with probability 0.13%) and holds with them (below 48 has probability 0.007%).
    tests/test_queues.py checks the selector's proportions exactly, with a seeded RNG."""
    a, b = unique_queue + "_a", unique_queue + "_b"
    mux = ServeMux()
    order: list[str] = []
    enough = anyio.Event()

    async def handler(task: Task) -> None:
        order.append(current_task().queue)
        if len(order) >= 70:
            enough.set()

    mux.handle_func("w", handler)
    await client.enqueue_many([Task("w") for _ in range(150)], queue=a)
    await client.enqueue_many([Task("w") for _ in range(150)], queue=b)
    async with serving(make_server(redis_target, {a: 6, b: 1}, concurrency=1), mux):
        with anyio.fail_after(30):
            await enough.wait()

    first = order[:70]
    assert first.count(a) >= 48, f"{first.count(a)} of 70 from the weight-6 queue"


async def test_graceful_shutdown_requeues_running_task_at_the_head(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    started = anyio.Event()
    saw_cancel = False

    async def long(task: Task) -> None:
        nonlocal saw_cancel
        started.set()
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            saw_cancel = True
            raise

    mux.handle_func("long", long)
    server = make_server(redis_target, {unique_queue: 1}, concurrency=1, shutdown_timeout=0.5)
    async with serving(server, mux):
        running = await client.enqueue(Task("long"), queue=unique_queue)
        with anyio.fail_after(5):
            await started.wait()
        waiting = await client.enqueue(Task("long"), queue=unique_queue)
        t0 = time.monotonic()
    shutdown_took = time.monotonic() - t0

    assert saw_cancel
    assert shutdown_took < 5
    # the interrupted task is next to be dequeued (right end), ahead of the one that never started
    assert await raw.cmd("LRANGE", q("pending"), 0, -1) == [waiting.id.encode(), running.id.encode()]
    assert await raw.cmd("LLEN", q("active")) == 0
    assert await raw.cmd("ZCARD", q("lease")) == 0
    fields = await hgetall(raw, q(f"t:{running.id}"))
    assert fields["state"] == b"pending"
    assert "pending_since" in fields
    assert decode_task_message(fields["msg"]).retried == 0
    assert await counter(raw, q("processed")) == 0
    assert await counter(raw, q("failed")) == 0


async def test_shutdown_under_load_loses_nothing(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    done: list[str] = []

    async def handler(task: Task) -> None:
        await anyio.sleep(0.05 * (int(task.payload) % 7))
        done.append(current_task().id)

    mux.handle_func("load", handler)
    infos = await client.enqueue_many([Task("load", str(i)) for i in range(60)], queue=unique_queue)
    ids = {i.id for i in infos if not isinstance(i, Exception)}
    assert len(ids) == 60
    server = make_server(
        redis_target, {unique_queue: 1}, concurrency=8, dequeue_batch=3, shutdown_timeout=0.1
    )
    async with serving(server, mux):
        await anyio.sleep(0.4)

    assert await raw.cmd("LLEN", q("active")) == 0
    assert await raw.cmd("ZCARD", q("lease")) == 0
    pending = [m.decode() for m in await raw.cmd("LRANGE", q("pending"), 0, -1)]
    assert len(pending) == len(set(pending))
    assert len(done) == len(set(done))
    assert set(pending).isdisjoint(done)
    assert set(pending) | set(done) == ids
    assert 0 < len(done) < 60
    for tid in pending:
        assert (await hgetall(raw, q(f"t:{tid}")))["state"] == b"pending"
    for tid in done:
        assert await raw.cmd("EXISTS", q(f"t:{tid}")) == 0
    assert await counter(raw, q("processed")) == len(done)
    assert await counter(raw, q("failed")) == 0


async def test_shutdown_waits_for_a_handler_that_finishes_within_the_timeout(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    started = anyio.Event()
    finished = False

    async def short(task: Task) -> None:
        nonlocal finished
        started.set()
        await anyio.sleep(0.3)
        finished = True

    mux.handle_func("short", short)
    server = make_server(redis_target, {unique_queue: 1}, concurrency=1, shutdown_timeout=3)
    async with serving(server, mux):
        info = await client.enqueue(Task("short"), queue=unique_queue)
        with anyio.fail_after(5):
            await started.wait()

    assert finished
    assert await raw.cmd("EXISTS", q(f"t:{info.id}")) == 0
    assert await raw.cmd("LLEN", q("pending")) == 0
    assert await raw.cmd("LLEN", q("active")) == 0
    assert await counter(raw, q("processed")) == 1


async def test_malformed_message_is_archived_and_processing_continues(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    garbage = b"\xff\xfenot a protobuf\xff"
    await raw.cmd("HSET", q("t:bad-1"), "msg", garbage, "state", "pending", "pending_since", time.time_ns())
    await raw.cmd("LPUSH", q("pending"), "bad-1")
    mux = ServeMux()
    ran: list[str] = []

    async def handler(task: Task) -> None:
        ran.append(current_task().id)

    mux.handle_func("good", handler)
    async with serving(make_server(redis_target, {unique_queue: 1}), mux):
        good = await client.enqueue(Task("good"), queue=unique_queue)
        await wait_until(in_zset(raw, q("archived"), "bad-1"), 5, what="malformed task archived")
        await wait_until(gone(raw, q(f"t:{good.id}")), 5, what="good task done")
        good2 = await client.enqueue(Task("good"), queue=unique_queue)
        await wait_until(gone(raw, q(f"t:{good2.id}")), 5, what="second good task done")

    assert ran == [good.id, good2.id]
    fields = await hgetall(raw, q("t:bad-1"))
    assert fields["state"] == b"archived"
    msg = decode_task_message(fields["msg"])
    assert "malformed" in msg.error_msg
    assert msg.payload == garbage  # the undecodable bytes are kept for inspection
    await assert_not_active(raw, unique_queue, "bad-1")


async def test_cancel_message_stops_handler_and_retries_without_failure(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    mux = ServeMux()
    started = anyio.Event()
    saw_cancel = False
    finished = False

    async def long(task: Task) -> None:
        nonlocal saw_cancel, finished
        started.set()
        try:
            await anyio.sleep(30)
            finished = True
        except anyio.get_cancelled_exc_class():
            saw_cancel = True
            raise

    mux.handle_func("long", long)
    async with serving(make_server(redis_target, {unique_queue: 1}), mux):
        info = await client.enqueue(Task("long"), queue=unique_queue)
        with anyio.fail_after(5):
            await started.wait()

        async def cancelled() -> bool:
            # re-published until seen: the subscription may still be starting (or on another node)
            if await raw.cmd("ZSCORE", q("retry"), info.id) is not None:
                return True
            await raw.cmd("PUBLISH", "asynq:cancel", info.id)
            return False

        await wait_until(cancelled, 6, interval=0.2, what="cancelled task in retry")

    assert saw_cancel
    assert not finished
    msg = await stored_msg(raw, unique_queue, info.id)
    # not a failure (count_cancel_as_failure is off), so, as Go's Retry with isFailure=false, the
    # attempt does not use up a retry
    assert msg.retried == 0
    assert "cancel" in msg.error_msg
    assert await counter(raw, q("failed")) == 0
    assert await counter(raw, q(f"failed:{today()}")) == 0
    await assert_not_active(raw, unique_queue, info.id)


async def test_heartbeat_publishes_server_and_worker_info(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    mux = ServeMux()
    started = anyio.Event()
    release = anyio.Event()

    async def long(task: Task) -> None:
        started.set()
        await release.wait()

    mux.handle_func("hb", long)
    server = make_server(
        redis_target, {unique_queue: 3}, concurrency=4, heartbeat_interval=0.2, lease_duration=5
    )

    async def members(zset: str) -> list[str]:
        return [m.decode() for m in await raw.cmd("ZRANGE", zset, 0, -1) if server.server_id in m.decode()]

    async with serving(server, mux):
        info = await client.enqueue(Task("hb", b"payload"), queue=unique_queue)
        with anyio.fail_after(5):
            await started.wait()

        async def registered() -> bool:
            return bool(await members("asynq:servers"))

        await wait_until(registered, 3, what="server heartbeat written")
        servers = await members("asynq:servers")
        assert len(servers) == 1
        skey = servers[0]
        assert skey == f"asynq:servers:{{{skey.split('{', 1)[1].rstrip('}')}}}"
        assert float(await raw.cmd("ZSCORE", "asynq:servers", skey)) > time.time()
        rec = decode_server_info(await raw.cmd("GET", skey))
        assert rec.server_id == server.server_id
        assert rec.pid == os.getpid()
        assert rec.queues == {unique_queue: 3}
        assert rec.concurrency == 4
        assert rec.status == "active"
        assert skey == f"asynq:servers:{{{rec.host}:{rec.pid}:{rec.server_id}}}"
        wkey = f"asynq:workers:{{{rec.host}:{rec.pid}:{rec.server_id}}}"
        assert await members("asynq:workers") == [wkey]

        async def worker_listed() -> bool:
            return bool(await raw.cmd("HEXISTS", wkey, info.id))

        await wait_until(worker_listed, 3, what="running task in the workers hash")
        w = decode_worker_info(await raw.cmd("HGET", wkey, info.id))
        assert w.task_id == info.id
        assert w.task_type == "hb"
        assert w.task_payload == b"payload"
        assert w.queue == unique_queue
        assert w.server_id == server.server_id
        assert w.deadline > w.started
        assert abs((w.started - datetime.now(tz=UTC)).total_seconds()) < 5
        release.set()

    assert await members("asynq:servers") == []
    assert await members("asynq:workers") == []
    assert await raw.cmd("EXISTS", skey) == 0
    assert await raw.cmd("EXISTS", wkey) == 0
