"""A worker serving many queues on real Redis (single and cluster): while idle it holds one blocked
wait per queue, and tasks arriving in random queues are run without re-opening those waits (the
old wake-up cancelled every other queue's wait, which cost a reconnection per queue per task).

Counted in Redis's own client statistics, not timed: benchmarks/many_queues.py measures the
pick-up latency against the number of queues."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import anyio
import pytest
from conftest import RedisTarget
from redis.asyncio import Redis
from workerproc import conn_opt, wait_until

from asynq_aio import Client, Config, Server, Task

pytestmark = pytest.mark.anyio

N_QUEUES = 150
N_TASKS = 20
WARM_UP = 10


@pytest.fixture
async def nodes(redis_target: RedisTarget) -> AsyncIterator[list[Redis]]:
    """A plain client on every Redis node of the target, to read INFO from."""
    if redis_target.kind == "single":
        assert redis_target.url is not None
        clients = [Redis.from_url(redis_target.url)]
    else:
        assert redis_target.addrs is not None
        clients = [Redis(host=a.rsplit(":", 1)[0], port=int(a.rsplit(":", 1)[1])) for a in redis_target.addrs]
    yield clients
    for c in clients:
        await c.aclose()


async def stat(nodes: list[Redis], field: str) -> int:
    total = 0
    for node in nodes:
        info = await node.info("clients" if field in ("blocked_clients", "connected_clients") else "stats")
        total += int(info[field])
    return total


async def test_tasks_in_random_queues_run_without_reopening_the_idle_waits(
    redis_target: RedisTarget, nodes: list[Redis], unique_queue: str
) -> None:
    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    queues = [f"{unique_queue}_{i}" for i in range(N_QUEUES)]
    ran: list[str] = []

    async def handler(task: Task) -> None:
        ran.append(task.payload.decode())

    blocked_before = await stat(nodes, "blocked_clients")
    cfg = Config(queues=dict.fromkeys(queues, 1), concurrency=10, shutdown_timeout=1.0)
    rng = random.Random(11)
    async with Server(opt, cfg).serve(handler), Client(opt) as client:

        async def all_waiting() -> bool:
            return await stat(nodes, "blocked_clients") - blocked_before >= N_QUEUES

        await wait_until(all_waiting, 30, what=f"one blocked wait per queue ({N_QUEUES})")

        async def run_tasks(first: int, count: int) -> None:
            for i in range(first, first + count):
                await client.enqueue(Task("many:q", str(i).encode()), queue=rng.choice(queues))

                async def done(i: int = i) -> bool:
                    return len(ran) > i

                await wait_until(done, 15, what=f"task {i} to run")
                await anyio.sleep(0.02)

        await run_tasks(0, WARM_UP)  # the client's and the worker's pools open their connections
        opened_before = await stat(nodes, "total_connections_received")
        await run_tasks(WARM_UP, N_TASKS)
        await wait_until(all_waiting, 30, what="the waits of the queues that had a task again")
        opened = await stat(nodes, "total_connections_received") - opened_before
    assert sorted(ran, key=int) == [str(i) for i in range(WARM_UP + N_TASKS)]
    # the old wake-up reconnected ~N_QUEUES waits per task (about 3,000 here); what may open is
    # the pool growing once for the background loops' fan-out over the queues (a few dozen)
    assert opened < N_QUEUES // 2, opened
