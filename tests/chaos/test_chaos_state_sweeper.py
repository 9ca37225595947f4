"""The state sweeper: tasks whose hash ``state`` disagrees with the list or zset they sit in (made here
on purpose, as a foreign writer or a half-applied script would leave them) are reconciled, a bounded
window per list per round, and consistent tasks are never touched."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from conftest import RedisTarget
from workerproc import conn_opt, wait_until

from asynq_aio import Client, Config, ServeMux, Server, Task
from asynq_aio.protocol.keys import queue_keys
from asynq_aio.server.recoverer import StateSweeper

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(redis_target: RedisTarget) -> AsyncIterator[Client]:
    async with Client(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)) as c:
        yield c


async def state_of(client: Client, queue: str, task_id: str) -> bytes | None:
    value = await client._broker.transport.call("HGET", queue_keys(queue).task(task_id), "state")
    return value if value is None else bytes(value)


async def test_sweeper_reconciles_each_kind_of_disagreement(client: Client, unique_queue: str) -> None:
    q = unique_queue
    qk = queue_keys(q)
    tr = client._broker.transport
    ok = await client.enqueue(Task("sweep:ok"), queue=q)
    wrong_state = await client.enqueue(Task("sweep:a"), queue=q)
    twice = await client.enqueue(Task("sweep:b"), queue=q, process_in=3600)
    to_retry = await client.enqueue(Task("sweep:c"), queue=q)
    running = await client.enqueue(Task("sweep:d"), queue=q)

    # a pending task whose hash says scheduled (it is only in pending)
    await tr.call("HSET", qk.task(wrong_state.id), "state", "scheduled")
    # a scheduled task also listed in pending: its hash agrees with scheduled, so pending is the stray
    await tr.call("LPUSH", qk.pending, twice.id)
    # a task moved to retry by hand without its state
    await tr.call("LREM", qk.pending, 0, to_retry.id)
    await tr.call("ZADD", qk.retry, int(time.time()) + 3600, to_retry.id)
    # a leased active task whose hash still says pending
    await tr.call("LREM", qk.pending, 0, running.id)
    await tr.call("LPUSH", qk.active, running.id)
    await tr.call("ZADD", qk.lease, int(time.time()) + 3600, running.id)
    # IDs whose hash is gone
    await tr.call("ZADD", qk.archived, 1, "ghost-archived")
    await tr.call("RPUSH", qk.pending, "ghost-pending")

    sweeper = StateSweeper(client._broker, [q], batch=100)
    assert await sweeper.sweep_once() == 6
    assert await sweeper.sweep_once() == 0  # a second round finds everything consistent

    assert await state_of(client, q, ok.id) == b"pending"
    assert await state_of(client, q, wrong_state.id) == b"pending"
    assert await tr.call("HEXISTS", qk.task(wrong_state.id), "pending_since") == 1
    assert await state_of(client, q, twice.id) == b"scheduled"
    assert await tr.call("ZSCORE", qk.scheduled, twice.id) is not None
    assert await state_of(client, q, to_retry.id) == b"retry"
    assert await state_of(client, q, running.id) == b"active"
    assert await tr.call("ZCARD", qk.archived) == 0
    pending = {bytes(x).decode() for x in await tr.call("LRANGE", qk.pending, 0, -1)}
    assert pending == {ok.id, wrong_state.id}
    assert await tr.call("LRANGE", qk.active, 0, -1) == [running.id.encode()]
    assert await tr.call("ZCARD", qk.lease) == 1


async def test_sweeper_walks_long_lists_a_window_per_round(client: Client, unique_queue: str) -> None:
    q = unique_queue
    qk = queue_keys(q)
    infos = [await client.enqueue(Task("sweep:w", str(i)), queue=q) for i in range(7)]
    for info in infos:
        await client._broker.transport.call("HSET", qk.task(info.id), "state", "retry")
    sweeper = StateSweeper(client._broker, [q], batch=3)
    per_round = [await sweeper.sweep_once() for _ in range(4)]
    # 3 + 3 + 1 over the first three rounds (the cursor then starts over), nothing left for the 4th
    assert per_round == [3, 3, 1, 0]
    for info in infos:
        assert await state_of(client, q, info.id) == b"pending"


async def test_server_sweeps_on_its_own(redis_target: RedisTarget, client: Client, unique_queue: str) -> None:
    q = unique_queue
    qk = queue_keys(q)
    info = await client.enqueue(Task("sweep:later"), queue=q, process_in=3600)
    await client._broker.transport.call("HSET", qk.task(info.id), "state", "archived")
    cfg = Config(
        concurrency=1,
        queues={q: 1},
        lease_duration=2,
        heartbeat_interval=0.5,
        recovery_interval=0.1,
        recovery_skew=0.0,
        retry_delay_func=lambda n, e, t: 0.0,  # recovered tasks run again at once
        sweep_interval=0.2,
        shutdown_timeout=1,
    )

    async def handler(task: Task) -> None:
        return None

    mux = ServeMux()
    mux.handle_func("sweep:", handler)
    server = Server(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs), cfg)
    async with server.serve(mux):

        async def fixed() -> bool:
            return await state_of(client, q, info.id) == b"scheduled"

        await wait_until(fixed, 10, what="the server's sweeper to fix the state")
