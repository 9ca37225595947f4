"""Cleanup keeps up with the work: the janitor and the recoverer keep going while they find full
batches, one bad record does not block a queue's recovery, and recovery follows Go's semantics
(skew margin, retry through retry_delay_func). Real Redis, single and cluster."""

from __future__ import annotations

import time

import anyio
import pytest
from conftest import RedisTarget
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import Client, Config, ServeMux, Server, Task
from asynq_aio.protocol.broker import MALFORMED_TYPE
from asynq_aio.protocol.codec import decode_task_message
from asynq_aio.protocol.keys import ALL_SERVERS, ALL_WORKERS, queue_keys
from asynq_aio.server.janitor import janitor_loop, janitor_round
from asynq_aio.server.recoverer import LEASE_EXPIRED, recover_once

pytestmark = pytest.mark.anyio


def _ids(reply: list[bytes]) -> set[str]:
    return {x.decode() for x in reply}


async def _completed(raw: RawRedis, queue: str, ids: list[str], score: float) -> None:
    qk = queue_keys(queue)
    for i in range(0, len(ids), 200):
        chunk = ids[i : i + 200]
        for tid in chunk:
            await raw.cmd("HSET", qk.task(tid), "msg", b"x", "state", "completed")
        await raw.cmd("ZADD", qk.completed, *[a for tid in chunk for a in (score, tid)])


async def test_janitor_round_works_off_a_backlog_of_many_batches(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    qk = queue_keys(unique_queue)
    now = time.time()
    expired = [f"old-{i}" for i in range(1250)]
    alive = [f"new-{i}" for i in range(30)]
    await _completed(raw, unique_queue, expired, now - 10)
    await _completed(raw, unique_queue, alive, now + 3600)
    r = await janitor_round(client._broker, [unique_queue], batch=100)

    assert r.deleted == 1250 and not r.backlog_left
    assert r.calls == 13  # 12 full batches, then one of 50 ends the round
    assert _ids(await raw.cmd("ZRANGE", qk.completed, 0, -1)) == set(alive)
    assert await raw.cmd("EXISTS", *(qk.task(t) for t in expired[:50])) == 0
    assert await raw.cmd("EXISTS", *(qk.task(t) for t in alive)) == len(alive)


async def test_janitor_round_stops_at_its_budget_and_says_so(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    await _completed(raw, unique_queue, [f"old-{i}" for i in range(250)], time.time() - 10)
    r = await janitor_round(client._broker, [unique_queue], batch=100, budget=0)
    assert (r.deleted, r.calls, r.backlog_left) == (100, 1, True)
    r = await janitor_round(client._broker, [unique_queue], batch=100)
    assert (r.deleted, r.backlog_left) == (150, False)


async def test_a_busy_janitor_comes_back_within_about_a_second(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """After a round that deleted something, the next round starts within BUSY_INTERVAL (1 s, with
    up to 25% jitter), not after janitor_interval (here an hour)."""
    qk = queue_keys(unique_queue)
    await _completed(raw, unique_queue, [f"first-{i}" for i in range(10)], time.time() - 10)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(janitor_loop, client._broker, [unique_queue], 3600.0)

            async def cleared() -> bool:
                return int(await raw.cmd("ZCARD", qk.completed)) == 0

            await wait_until(cleared, 5, what="the first round")
            await _completed(raw, unique_queue, [f"second-{i}" for i in range(10)], time.time() - 10)
            await wait_until(cleared, 5, what="a second round within about a second")
            # Stop it while it sleeps (a round's remaining steps take milliseconds), not in the middle
            # of a Redis call: a command cancelled mid-flight leaves a connection for the GC to find.
            await anyio.sleep(0.3)
            tg.cancel_scope.cancel()


async def test_janitor_prunes_dead_servers_from_the_indexes(client: Client, raw: RawRedis) -> None:
    now = time.time()
    dead, live = f"asynq:servers:{{dead-{now}}}", f"asynq:servers:{{live-{now}}}"
    dead_w, live_w = f"asynq:workers:{{dead-{now}}}", f"asynq:workers:{{live-{now}}}"
    await raw.cmd("ZADD", ALL_SERVERS, now - 3600, dead, now + 30, live)
    await raw.cmd("ZADD", ALL_WORKERS, now - 3600, dead_w, now + 30, live_w)
    try:
        assert await client._broker.prune_dead_servers() >= 2
        assert await raw.cmd("ZSCORE", ALL_SERVERS, dead) is None
        assert await raw.cmd("ZSCORE", ALL_WORKERS, dead_w) is None
        assert await raw.cmd("ZSCORE", ALL_SERVERS, live) is not None
        assert await raw.cmd("ZSCORE", ALL_WORKERS, live_w) is not None
    finally:
        await raw.cmd("ZREM", ALL_SERVERS, live)
        await raw.cmd("ZREM", ALL_WORKERS, live_w)


async def _expired_active(client: Client, queue: str, n: int, lease_until: float) -> list[str]:
    infos = await client.enqueue_many([Task("r", str(i).encode()) for i in range(n)], queue=queue)
    taken: list[str] = []
    while len(taken) < n:
        got = await client._broker.dequeue(queue, min(100, n - len(taken)), lease_until)
        assert isinstance(got, list) and got
        taken += [d.task_id for d in got]
    assert sorted(taken) == sorted(i.id for i in infos if not isinstance(i, Exception))
    return taken


async def test_recovery_works_off_more_than_one_batch_in_one_round(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    qk = queue_keys(unique_queue)
    ids = await _expired_active(client, unique_queue, 250, time.time() - 100)
    assert await recover_once(client._broker, [unique_queue], batch=100) == 250
    assert _ids(await raw.cmd("ZRANGE", qk.retry, 0, -1)) == set(ids)
    assert await raw.cmd("LLEN", qk.active) == 0 and await raw.cmd("ZCARD", qk.lease) == 0


async def test_an_undecodable_record_is_archived_and_does_not_block_recovery(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    qk = queue_keys(unique_queue)
    (good,) = await _expired_active(client, unique_queue, 1, time.time() - 100)
    # A foreign writer left an undecodable record in active with an expired lease (it sorts first).
    await raw.cmd("HSET", qk.task("bad"), "msg", b"\xff\xfe not a protobuf", "state", "active")
    await raw.cmd("LPUSH", qk.active, "bad")
    await raw.cmd("ZADD", qk.lease, 1, "bad")

    assert await recover_once(client._broker, [unique_queue]) == 2

    assert _ids(await raw.cmd("ZRANGE", qk.retry, 0, -1)) == {good}
    assert _ids(await raw.cmd("ZRANGE", qk.archived, 0, -1)) == {"bad"}
    placeholder = decode_task_message(await raw.cmd("HGET", qk.task("bad"), "msg"))
    assert placeholder.type == MALFORMED_TYPE and placeholder.payload == b"\xff\xfe not a protobuf"
    assert placeholder.error_msg.startswith("malformed task message")
    assert await recover_once(client._broker, [unique_queue]) == 0


async def test_recovery_keeps_a_skew_margin_and_retries_through_the_delay_function(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    qk = queue_keys(unique_queue)
    (tid,) = await _expired_active(client, unique_queue, 1, time.time() - 10)
    seen: list[tuple[int, str, str]] = []

    def delay(retried: int, error: BaseException, task: Task) -> float:
        seen.append((retried, str(error), task.type))
        return 100.0

    # expired 10 s ago: inside Go's 30 s margin, left alone
    assert await recover_once(client._broker, [unique_queue], skew=30, retry_delay=delay) == 0
    assert await raw.cmd("ZCARD", qk.lease) == 1 and not seen
    before = time.time()
    assert await recover_once(client._broker, [unique_queue], skew=5, retry_delay=delay) == 1
    assert seen == [(0, LEASE_EXPIRED, "r")]
    score = float(await raw.cmd("ZSCORE", qk.retry, tid))
    assert before + 99 <= score <= time.time() + 101


class Transient(Exception):
    pass


async def test_an_error_that_is_not_a_failure_does_not_use_up_retries(
    redis_target: RedisTarget, raw: RawRedis, unique_queue: str
) -> None:
    """Go's Retry increments ``retried`` only when is_failure says so, and never archives then."""
    qk = queue_keys(unique_queue)
    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    attempts = 0

    mux = ServeMux()

    async def flaky(task: Task) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise Transient("try later")

    mux.handle_func("flaky", flaky)
    async with Client(opt) as client:
        info = await client.enqueue(Task("flaky"), queue=unique_queue, max_retry=1)
    cfg = Config(
        concurrency=1,
        queues={unique_queue: 1},
        forward_interval=0.05,
        retry_delay_func=lambda n, e, t: 0.0,
        is_failure=lambda e: not isinstance(e, Transient),
    )

    async def done() -> bool:
        return bool(await raw.cmd("GET", qk.processed))

    with anyio.fail_after(30):
        async with Server(opt, cfg).serve(mux):
            await wait_until(lambda: _is_gone(raw, qk.task(info.id)), 20, what="task done")
    assert attempts == 4  # three transient errors on a max_retry=1 task, then success
    assert await done()
    assert await raw.cmd("GET", qk.failed) is None  # none of them counted as a failure
    assert await raw.cmd("ZCARD", qk.archived) == 0


async def _is_gone(raw: RawRedis, key: str) -> bool:
    return int(await raw.cmd("EXISTS", key)) == 0
