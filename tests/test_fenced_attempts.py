"""Fenced attempts and lost replies, against real Redis.

Every outcome (ack, ack_many, fail, requeue, lease extension) names the attempt token its dequeue
wrote; once another attempt owns the task (it was recovered and dequeued again) the stale outcome is a
no-op that says so. "Re-sent with other workers acting in between" is tested by running the very same
op again after the other worker acted; the transport's own automatic re-send after a lost reply is
tested through a TCP proxy that cuts the connection after the command ran (tests/faultproxy.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlparse

import anyio
import pytest
from conftest import RedisTarget
from faultproxy import FaultProxy, fault_proxy, report_fault_figures
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import (
    Client,
    Config,
    RedisClientOpt,
    RedisClusterClientOpt,
    RedisUnavailableError,
    RetryPolicy,
    ServeMux,
    Server,
    Task,
    parse_redis_url,
)
from asynq_aio._connection import RedisConnOpt
from asynq_aio.protocol import scripts
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.broker import Broker, Dequeued
from asynq_aio.protocol.codec import decode_task_message
from asynq_aio.protocol.keys import queue_keys
from asynq_aio.server.recoverer import recover_once

pytestmark = pytest.mark.anyio


async def _take(broker: Broker, queue: str, n: int, lease_until: float) -> list[Dequeued]:
    got = await broker.dequeue(queue, n, lease_until)
    assert isinstance(got, list)
    return got


async def _taken_over(client: Client, queue: str) -> tuple[Dequeued, Dequeued]:
    """One task dequeued by attempt A, whose lease expired, recovered, and dequeued again by B."""
    await client.enqueue(Task("t", b"x"), queue=queue)
    b1, b2 = Broker(client._broker.transport), Broker(client._broker.transport)
    (a,) = await _take(b1, queue, 1, time.time() - 10)
    assert await recover_once(b1, [queue]) == 1
    await client._broker.transport.call("ZADD", queue_keys(queue).retry, 0, a.task_id)  # due now
    assert await b1.forward(queue) == 1
    (b,) = await _take(b2, queue, 1, time.time() + 60)
    assert (a.task_id, a.attempt != b.attempt) == (b.task_id, True)
    return a, b


async def _still_b_s(raw: RawRedis, queue: str, b: Dequeued) -> None:
    qk = queue_keys(queue)
    assert await raw.cmd("LRANGE", qk.active, 0, -1) == [b.task_id.encode()]
    assert await raw.cmd("ZSCORE", qk.lease, b.task_id) is not None
    assert await raw.cmd("HGET", qk.task(b.task_id), "aio_attempt") == b.attempt.encode()
    assert await raw.cmd("HGET", qk.task(b.task_id), "state") == b"active"


async def test_a_stale_attempts_outcomes_do_nothing(client: Client, raw: RawRedis, unique_queue: str) -> None:
    a, b = await _taken_over(client, unique_queue)
    broker = client._broker
    msg = decode_task_message(a.raw)
    stale = [
        broker.ack_op(msg, attempt=a.attempt),
        broker.ack_many_op(unique_queue, [msg], attempts=[a.attempt]),
        broker.fail_op(msg, error="late", archive=False, retry_at=time.time(), attempt=a.attempt),
        broker.fail_op(msg, error="late", archive=True, attempt=a.attempt),
        broker.requeue_op(unique_queue, a.task_id, attempt=a.attempt),
    ]
    assert await broker.run(stale) == [0, [0], 0, 0, 0]
    assert await broker.extend_leases(unique_queue, [(a.task_id, a.attempt)], time.time() + 60) == [a.task_id]
    await _still_b_s(raw, unique_queue, b)
    # the owner's own outcome still applies
    assert await broker.extend_leases(unique_queue, [(b.task_id, b.attempt)], time.time() + 60) == []
    assert await broker.run([broker.ack_many_op(unique_queue, [msg], attempts=[b.attempt])]) == [[1]]
    assert await raw.cmd("LLEN", queue_keys(unique_queue).active) == 0


async def test_a_re_sent_requeue_does_not_take_back_a_task_another_worker_runs(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """Requeue ran, its reply was lost; another worker took the task; the re-send arrives."""
    await client.enqueue(Task("t", b"x"), queue=unique_queue)
    b1, b2 = Broker(client._broker.transport), Broker(client._broker.transport)
    (a,) = await _take(b1, unique_queue, 1, time.time() + 60)
    requeue = b1.requeue_op(unique_queue, a.task_id, attempt=a.attempt)
    assert await b1.run([requeue]) == [1]
    (b,) = await _take(b2, unique_queue, 1, time.time() + 60)
    assert await b1.run([requeue]) == [0]  # the re-send
    await _still_b_s(raw, unique_queue, b)


async def test_re_sent_acks_and_fails_apply_once(client: Client, raw: RawRedis, unique_queue: str) -> None:
    qk = queue_keys(unique_queue)
    await client.enqueue_many([Task("t", str(i).encode()) for i in range(3)], queue=unique_queue)
    got = await _take(client._broker, unique_queue, 3, time.time() + 60)
    msgs = [decode_task_message(d.raw) for d in got]
    ack = client._broker.ack_many_op(unique_queue, msgs[:2], attempts=[d.attempt for d in got[:2]])
    fail = client._broker.fail_op(msgs[2], error="boom", archive=False, retry_at=1, attempt=got[2].attempt)
    assert await client._broker.run([ack, fail]) == [[1, 1], 1]
    assert await client._broker.run([ack, fail]) == [[0, 0], 0]
    assert int(await raw.cmd("GET", qk.processed)) == 3 and int(await raw.cmd("GET", qk.failed)) == 1
    retried = decode_task_message(await raw.cmd("HGET", qk.task(got[2].task_id), "msg"))
    assert retried.retried == 1 and await raw.cmd("HGET", qk.task(got[2].task_id), "aio_attempt") is None


async def test_a_handler_whose_attempt_was_taken_over_is_cancelled_and_reports_nothing(
    redis_target: RedisTarget, raw: RawRedis, unique_queue: str
) -> None:
    """The heartbeat's lease extension finds another attempt's token on the task (it was recovered
    and dequeued again elsewhere): this copy's handler is cancelled and writes no outcome."""
    qk = queue_keys(unique_queue)
    started, cancelled = anyio.Event(), anyio.Event()
    mux = ServeMux()

    async def long(task: Task) -> None:
        started.set()
        try:
            await anyio.sleep(60)
        finally:
            cancelled.set()

    mux.handle_func("long", long)
    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    async with Client(opt) as client:
        info = await client.enqueue(Task("long"), queue=unique_queue)
    cfg = Config(queues={unique_queue: 1}, heartbeat_interval=0.2, lease_duration=30)
    with anyio.fail_after(30):
        async with Server(opt, cfg).serve(mux):
            await started.wait()
            await raw.cmd("HSET", qk.task(info.id), "aio_attempt", "someone-else-1")
            await cancelled.wait()
            await anyio.sleep(0.5)  # an outcome, if any were sent, would have landed
            assert await raw.cmd("HGET", qk.task(info.id), "state") == b"active"
            assert await raw.cmd("ZCARD", qk.retry) == 0
            assert await raw.cmd("GET", qk.processed) is None
            await raw.cmd("HSET", qk.task(info.id), "aio_attempt", "")  # let shutdown find nothing of ours


async def test_go_readers_see_no_difference(client: Client, raw: RawRedis, unique_queue: str) -> None:
    """The token is one extra hash field while the task is active; it is gone once it leaves active,
    and Go reads the hash by field name (msg, state, ...), so nothing Go reads changes."""
    qk = queue_keys(unique_queue)
    info = await client.enqueue(Task("t", b"x"), queue=unique_queue, retention=60)
    (d,) = await _take(client._broker, unique_queue, 1, time.time() + 60)
    fields = await raw.cmd("HKEYS", qk.task(info.id))
    assert sorted(f.decode() for f in fields) == ["aio_attempt", "msg", "state"]
    assert await client._broker.run(
        [client._broker.ack_op(decode_task_message(d.raw), attempt=d.attempt)]
    ) == [1]
    fields = await raw.cmd("HKEYS", qk.task(info.id))
    assert sorted(f.decode() for f in fields) == ["msg", "state"]


def _single_addr(url: str) -> tuple[str, int, int]:
    u = urlparse(url)
    return u.hostname or "127.0.0.1", u.port or 6379, int((u.path or "/0").lstrip("/") or 0)


async def test_a_re_sent_dequeue_hands_back_the_same_batch(single_redis_url: str, unique_queue: str) -> None:
    """The dequeue ran, the connection dropped before its reply; the transport re-sends it, and the
    re-send must hand back the tasks the first run moved to active, not an empty batch."""
    host, port, db = _single_addr(single_redis_url)
    qk = queue_keys(unique_queue)
    raw = RawRedis("single", single_redis_url, None)
    try:
        async with Client(RedisClientOpt(addr=f"{host}:{port}", db=db)) as client:
            infos = await client.enqueue_many(
                [Task("t", str(i).encode()) for i in range(10)], queue=unique_queue
            )
        await raw.cmd("SCRIPT", "LOAD", scripts.DEQUEUE.source)
        with fault_proxy(host, port) as proxy:
            transport = Transport.connect(RedisClientOpt(addr=f"127.0.0.1:{proxy.port}", db=db))
            try:
                broker = Broker(transport)
                proxy.drop_reply_after(scripts.DEQUEUE.sha.encode())
                got = await _take(broker, unique_queue, 10, time.time() + 60)
                assert proxy.dropped == 1
            finally:
                await transport.aclose()
        assert sorted(d.task_id for d in got) == sorted(i.id for i in infos if not isinstance(i, Exception))
        assert len({d.attempt for d in got}) == 1
        assert await raw.cmd("LLEN", qk.pending) == 0 and await raw.cmd("LLEN", qk.active) == 10
    finally:
        await raw.aclose()


async def test_a_dequeue_given_up_on_is_re_sent_by_the_next_one(
    single_redis_url: str, unique_queue: str
) -> None:
    """The dequeue ran but the caller gave up on it (here: no retry budget left when the reply was
    lost; in a worker: the call ran out of its time budget on a stalled node). Its tasks are in
    active under its token; the next dequeue of the queue re-sends that call and hands them out,
    in pieces no larger than asked for, instead of leaving them to wait for their lease to expire."""
    host, port, db = _single_addr(single_redis_url)
    qk = queue_keys(unique_queue)
    raw = RawRedis("single", single_redis_url, None)
    try:
        async with Client(RedisClientOpt(addr=f"{host}:{port}", db=db)) as client:
            infos = await client.enqueue_many(
                [Task("t", str(i).encode()) for i in range(10)], queue=unique_queue
            )
        await raw.cmd("SCRIPT", "LOAD", scripts.DEQUEUE.source)
        with fault_proxy(host, port) as proxy:
            transport = Transport.connect(
                RedisClientOpt(addr=f"127.0.0.1:{proxy.port}", db=db), retry=RetryPolicy(budget=0)
            )
            try:
                broker = Broker(transport)
                proxy.drop_reply_after(scripts.DEQUEUE.sha.encode())
                with pytest.raises(RedisUnavailableError):
                    await broker.dequeue(unique_queue, 10, time.time() + 60)
                assert proxy.dropped == 1
                assert await raw.cmd("LLEN", qk.active) == 10  # it ran: all ten are taken
                first = await broker.dequeue(unique_queue, 4, time.time() + 60)
                rest = await broker.dequeue(unique_queue, 10, time.time() + 60)
            finally:
                await transport.aclose()
        assert isinstance(first, list) and isinstance(rest, list)
        assert (len(first), len(rest)) == (4, 6)
        assert sorted(d.task_id for d in first + rest) == sorted(
            i.id for i in infos if not isinstance(i, Exception)
        )
        assert len({d.attempt for d in first + rest}) == 1  # the given-up call's own attempt
        assert await raw.cmd("LLEN", qk.pending) == 0 and await raw.cmd("LLEN", qk.active) == 10
    finally:
        await raw.aclose()


@contextmanager
def _through_proxies(
    target: RedisTarget,
) -> Iterator[tuple[list[FaultProxy], RedisConnOpt, RedisConnOpt]]:
    """Every node of the target behind its own fault proxy: (proxies, options through them, direct)."""
    with ExitStack() as stack:
        if target.kind == "single":
            assert target.url is not None
            host, port, db = _single_addr(target.url)
            proxy = stack.enter_context(fault_proxy(host, port))
            yield [proxy], RedisClientOpt(addr=f"127.0.0.1:{proxy.port}", db=db), parse_redis_url(target.url)
            return
        addrs = list(target.addrs or [])
        by_addr = {
            a: stack.enter_context(fault_proxy(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1]))) for a in addrs
        }
        opt = RedisClusterClientOpt(
            addrs=[f"127.0.0.1:{p.port}" for p in by_addr.values()],
            address_map={a: f"127.0.0.1:{p.port}" for a, p in by_addr.items()},
        )
        yield list(by_addr.values()), opt, RedisClusterClientOpt(addrs=addrs)


async def test_lost_replies_during_a_workload_lose_nothing_and_run_nothing_twice(
    redis_target: RedisTarget, raw: RawRedis, unique_queue: str
) -> None:
    """A worker whose connections lose 2% of its script replies (dequeue, ack_many, fail, lease
    extension, forward, requeue at shutdown), on every node, while a producer enqueues half of the
    tasks through the same faulty proxies (lone enqueues and batches): every task runs exactly
    once, none waits in active for a lease to expire, and none is counted as a failed attempt it
    did not have."""
    qk = queue_keys(unique_queue)
    n = 600
    runs: Counter[str] = Counter()
    failed_once: set[str] = set()

    mux = ServeMux()

    async def handler(task: Task) -> None:
        key = task.payload.decode()
        runs[key] += 1
        if int(key) % 10 == 0 and key not in failed_once:  # every tenth fails once, then succeeds
            failed_once.add(key)
            raise RuntimeError("planned failure")

    mux.handle_func("t", handler)
    with _through_proxies(redis_target) as (proxies, proxied, direct):
        async with Client(direct) as client:
            await client.enqueue_many([Task("t", str(i).encode()) for i in range(n // 2)], queue=unique_queue)
        cfg = Config(
            concurrency=20,
            queues={unique_queue: 1},
            dequeue_batch=8,
            heartbeat_interval=0.2,
            forward_interval=0.05,
            recovery_skew=0.0,
            retry_delay_func=lambda n, e, t: 0.0,
        )
        for seed, proxy in enumerate(proxies, start=7):
            proxy.drop_replies_at_rate(b"EVALSHA", 0.02, seed=seed)
        with anyio.fail_after(120):
            async with Server(proxied, cfg).serve(mux), Client(proxied) as producer:
                for start in range(n // 2, n, 20):  # alternately ten lone enqueues and a batch of ten
                    for i in range(start, start + 10):
                        await producer.enqueue(Task("t", str(i).encode()), queue=unique_queue)
                    await producer.enqueue_many(
                        [Task("t", str(i).encode()) for i in range(start + 10, start + 20)],
                        queue=unique_queue,
                    )

                async def all_done() -> bool:
                    return int(await raw.cmd("GET", qk.processed) or 0) >= n + n // 10

                await wait_until(all_done, 100, what="every task done")
        dropped = sum(p.dropped for p in proxies)
    report_fault_figures(
        f"2% of script replies lost, {redis_target.kind}",
        enqueued=n,
        replies_lost=dropped,
        ran=len(runs),
        lost=n - len(runs),
        duplicate_runs=sum(1 for k, c in runs.items() if c > (2 if int(k) % 10 == 0 else 1)),
        left_in_active=int(await raw.cmd("LLEN", qk.active)),
        wrongly_failed=int(await raw.cmd("GET", qk.failed) or 0) - n // 10,
    )
    assert dropped > 0, "the proxies lost no reply: the test proved nothing"
    assert sorted(runs) == sorted(str(i) for i in range(n))  # nothing lost
    twice = {k: c for k, c in runs.items() if c != (2 if int(k) % 10 == 0 else 1)}
    assert twice == {}  # nothing run twice (beyond the planned retry)
    assert int(await raw.cmd("GET", qk.failed)) == n // 10  # no attempt wrongly counted as failed
    for key in (qk.active, qk.pending):
        assert await raw.cmd("LLEN", key) == 0
    for key in (qk.lease, qk.retry, qk.archived):
        assert await raw.cmd("ZCARD", key) == 0
