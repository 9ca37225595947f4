"""Live resharding: the slot of a busy queue moves to another master while tasks are enqueued and
processed. Redis answers ASK/TRYAGAIN for the whole migration; nothing may fail or get stuck."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
import redis
from conftest import RunningCluster

from asynq_aio import Client, Config, RedisClusterClientOpt, RetryPolicy, ServeMux, Server, Task
from asynq_aio._inspector import Inspector
from asynq_aio.protocol.keys import queue_keys

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _cmd(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _node(addr: str) -> redis.Redis:
    host, port = addr.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), socket_timeout=10)


def migrate_slot(addrs: list[str], slot: int, pause: float) -> tuple[str, str, int]:
    """Move ``slot`` to another master the way ``redis-cli --cluster reshard`` does, in small
    batches with pauses so the migration overlaps the load. Returns (source, target, keys moved)."""
    seed = _node(addrs[0])
    nodes: dict[str, tuple[str, bool, bool]] = {}  # node id -> (addr, is master, owns the slot)
    for addr, info in _cmd(seed, "CLUSTER NODES").items():
        owns = any(int(r[0]) <= slot <= int(r[-1]) for r in info["slots"])
        nodes[info["node_id"]] = (addr, "master" in info["flags"], owns)
    seed.close()
    source_id = next(n for n, (_, master, owns) in nodes.items() if master and owns)
    target_id = next(n for n, (_, master, owns) in nodes.items() if master and not owns)
    source, target = _node(nodes[source_id][0]), _node(nodes[target_id][0])
    t_host, t_port = nodes[target_id][0].rsplit(":", 1)
    moved = 0
    try:
        _cmd(target, "CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        _cmd(source, "CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        while True:
            keys = _cmd(source, "CLUSTER GETKEYSINSLOT", slot, 5)
            if not keys:
                break
            _cmd(source, "MIGRATE", t_host, int(t_port), "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(pause)
        for addr, master, _ in nodes.values():
            if master:
                c = _node(addr)
                _cmd(c, "CLUSTER SETSLOT", slot, "NODE", target_id)
                c.close()
    finally:
        source.close()
        target.close()
    return nodes[source_id][0], nodes[target_id][0], moved


async def test_queue_keeps_working_while_its_slot_migrates(
    redis_cluster: RunningCluster, unique_queue: str
) -> None:
    opt = RedisClusterClientOpt(addrs=redis_cluster.addrs)
    qk = queue_keys(unique_queue)
    slot = Inspector.queue_slot(unique_queue)
    done: set[str] = set()
    runs = 0

    async def handler(task: Task) -> None:
        nonlocal runs
        runs += 1
        done.add(task.payload.decode())
        await anyio.sleep(0.005)

    mux = ServeMux()
    mux.handle_func("reshard:", handler)
    enqueued: list[str] = []
    failures: list[BaseException] = []
    cfg = Config(
        concurrency=8,
        queues={unique_queue: 1},
        lease_duration=10,
        heartbeat_interval=1,
        recovery_interval=1,
        recovery_skew=0.0,
        retry_delay_func=lambda n, e, t: 0.0,  # recovered tasks run again at once
        forward_interval=0.2,
    )
    async with Client(opt, retry=RetryPolicy(budget=60)) as client:
        for i in range(200):  # backlog, so the queue's keys are busy and numerous when it moves
            await client.enqueue(Task("reshard:x", str(i).encode()), queue=unique_queue)
            enqueued.append(str(i))
        migration: dict[str, object] = {}
        async with Server(opt, cfg, retry=RetryPolicy(budget=60)).serve(mux):

            async def produce() -> None:
                for i in range(200, 600):
                    try:
                        await client.enqueue(Task("reshard:x", str(i).encode()), queue=unique_queue)
                        enqueued.append(str(i))
                    except Exception as exc:  # counted, then asserted to be zero
                        failures.append(exc)
                    await anyio.sleep(0.005)

            async def reshard() -> None:
                await anyio.sleep(0.2)
                t0 = time.monotonic()
                src, dst, moved = await anyio.to_thread.run_sync(
                    migrate_slot, redis_cluster.addrs, slot, 0.02
                )
                migration.update(source=src, target=dst, keys=moved, seconds=time.monotonic() - t0)

            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                tg.start_soon(reshard)
            with anyio.fail_after(60):
                while len(done) < len(enqueued):
                    await anyio.sleep(0.05)
        tr = client._broker.transport
        assert failures == []
        assert done == set(enqueued) and len(enqueued) == 600
        assert runs == 600  # nothing ran twice
        assert await tr.call("LLEN", qk.active) == 0
        assert await tr.call("ZCARD", qk.lease) == 0
        assert await tr.call("LLEN", qk.pending) == 0
        assert migration["keys"] and int(str(migration["keys"])) > 0
        assert migration["source"] != migration["target"]
    # the slot now lives on the target master
    owner = await anyio.to_thread.run_sync(lambda: _owner_addr(redis_cluster.addrs[0], slot))
    assert owner == migration["target"]


def _owner_addr(seed_addr: str, slot: int) -> str:
    seed = _node(seed_addr)
    try:
        for addr, info in _cmd(seed, "CLUSTER NODES").items():
            if "master" in info["flags"] and any(int(r[0]) <= slot <= int(r[-1]) for r in info["slots"]):
                return str(addr)
    finally:
        seed.close()
    raise AssertionError("slot not covered")
