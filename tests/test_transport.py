"""The transport against real servers: script cache misses, batches, blocking waits, failover."""

from __future__ import annotations

import socket
import time

import anyio
import pytest
from conftest import RedisTarget, RunningCluster
from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster

from asynq_aio import Client, RedisClusterClientOpt, RetryPolicy, Task, parse_redis_url
from asynq_aio._connection import RedisConnOpt
from asynq_aio.protocol._redis.errors import is_transient
from asynq_aio.protocol._redis.ops import LuaScript, Op
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.keys import queue_keys

pytestmark = pytest.mark.anyio

ECHO = LuaScript("echo_len", "return {redis.call('LLEN', KEYS[1]), ARGV[1]}")


def opt_for(t: RedisTarget) -> RedisConnOpt:
    if t.kind == "single":
        assert t.url is not None
        return parse_redis_url(t.url)
    assert t.addrs is not None
    return RedisClusterClientOpt(addrs=t.addrs)


async def flush_scripts(tr: Transport) -> None:
    """SCRIPT FLUSH on every node, as after a failover to a replica or a node restart."""
    if isinstance(tr.client, RedisCluster):
        for node in tr.client.get_nodes():
            await tr.client.execute_command("SCRIPT FLUSH", target_nodes=node)
    else:
        await tr.call("SCRIPT", "FLUSH")


def port_of(rc: RedisCluster, key: str) -> int:
    node = rc.get_node_from_key(key)
    assert node is not None
    return int(node.port)


def test_transient_classification() -> None:
    assert is_transient(rx.ConnectionError("Error 111 connecting"))
    assert is_transient(rx.TryAgainError("Multiple keys request during rehashing"))
    assert is_transient(rx.ClusterDownError("The cluster is down"))
    assert is_transient(rx.ClusterError("TTL exhausted."))
    assert is_transient(rx.ResponseError("LOADING Redis is loading the dataset in memory"))
    assert not is_transient(rx.AuthenticationError("WRONGPASS"))
    assert not is_transient(rx.ResponseError("value is not an integer or out of range"))
    assert not is_transient(ValueError("x"))


async def test_script_runs_after_script_cache_flush(redis_target: RedisTarget, unique_queue: str) -> None:
    tr = Transport.connect(opt_for(redis_target))
    key = queue_keys(unique_queue).pending
    try:
        await tr.call("RPUSH", key, "a", "b")
        assert await tr.script(ECHO, [key], ["x"]) == [2, b"x"]
        await flush_scripts(tr)
        # NOSCRIPT on the flushed node: the transport falls back to EVAL, once and transparently
        assert await tr.script(ECHO, [key], ["y"]) == [2, b"y"]
        # inside a pipeline too
        await flush_scripts(tr)
        res = await tr.batch([Op.eval(ECHO, [key], ["z"]), Op.command("LLEN", key)])
        assert res == [[2, b"z"], 2]
    finally:
        await tr.call("DEL", key)
        await tr.aclose()


async def test_enqueue_many_keeps_its_order_after_a_script_cache_flush(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    """The NOSCRIPT fallback re-sends in order: pending must list the tasks as they were given."""
    async with Client(opt_for(redis_target)) as client:
        await client.enqueue(Task("warm"), queue=unique_queue)  # the queue exists, then its node forgets
        await flush_scripts(client._broker.transport)
        infos = await client.enqueue_many(
            [Task("t", str(i).encode()) for i in range(200)], queue=unique_queue
        )
        ids = [i.id for i in infos if not isinstance(i, Exception)]
        assert len(ids) == 200
        pending = await client._broker.transport.call("LRANGE", queue_keys(unique_queue).pending, 0, -1)
        # LPUSH puts the newest at the left; the warm-up task is the oldest, at the right
        assert [p.decode() for p in reversed(pending)][1:] == ids
        await client._broker.transport.call("DEL", queue_keys(unique_queue).pending)


async def test_batch_reports_permanent_errors_per_item(redis_target: RedisTarget, unique_queue: str) -> None:
    tr = Transport.connect(opt_for(redis_target))
    qk = queue_keys(unique_queue)
    try:
        await tr.call("SET", qk.processed, "not-a-number")
        res = await tr.batch([Op.command("INCR", qk.processed), Op.command("INCR", qk.failed)])
        assert isinstance(res[0], rx.ResponseError)
        assert res[1] == 1
    finally:
        await tr.call("DEL", qk.processed)
        await tr.call("DEL", qk.failed)
        await tr.aclose()


async def test_wait_nonempty_wakes_on_push_and_keeps_the_list(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    tr = Transport.connect(opt_for(redis_target))
    key = queue_keys(unique_queue).pending
    woke_after: list[float] = []
    try:

        async def waiter() -> None:
            t0 = time.monotonic()
            assert await tr.wait_nonempty(key, 2.0) == b"b"  # the tail: the oldest, next to dequeue
            woke_after.append(time.monotonic() - t0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.2)
            await tr.call("LPUSH", key, "b", "a")
        assert woke_after and woke_after[0] < 1.5
        assert await tr.call("LRANGE", key, 0, -1) == [b"a", b"b"]  # identity rotation
        await tr.call("DEL", key)
        assert await tr.wait_nonempty(key, 0.2) is None  # times out empty
    finally:
        await tr.call("DEL", key)
        await tr.aclose()


async def test_unreachable_redis_names_the_address() -> None:
    tr = Transport.connect(parse_redis_url("redis://127.0.0.1:1/0"), retry=RetryPolicy(budget=0.5))
    try:
        with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:1"):
            await tr.call("PING")
    finally:
        await tr.aclose()


@pytest.mark.slow
async def test_enqueues_survive_master_failover(redis_cluster: RunningCluster, unique_queue: str) -> None:
    """SIGKILL the master of a queue's slot while a producer enqueues: every enqueue succeeds
    (retried through the failover) and each is stored exactly once."""
    opt = RedisClusterClientOpt(addrs=redis_cluster.addrs)
    cluster = redis_cluster.cluster
    qk = queue_keys(unique_queue)
    async with Client(opt, retry=RetryPolicy(budget=30)) as client:
        tr = client._broker.transport
        assert isinstance(tr.client, RedisCluster)
        rc = tr.client
        await client.enqueue(Task("t:failover", {"i": 0}), queue=unique_queue)  # loads the slot map
        master_port = port_of(rc, qk.pending)
        ok = 1
        failover_seen = anyio.Event()

        async def produce() -> None:
            nonlocal ok
            while not failover_seen.is_set() or ok < 150:
                await client.enqueue(Task("t:failover", {"i": ok}), queue=unique_queue)
                ok += 1
                await anyio.sleep(0.01)

        async def kill_and_watch() -> None:
            await anyio.sleep(0.5)
            cluster.kill_node(master_port)
            t0 = time.monotonic()
            while True:
                await anyio.sleep(0.2)
                try:
                    if port_of(rc, qk.pending) != master_port:
                        break
                except rx.SlotNotCoveredError:
                    pass  # the slot map is being reloaded
                assert time.monotonic() - t0 < 30, "no failover within 30 s"
            failover_seen.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                tg.start_soon(kill_and_watch)
            assert await tr.call("LLEN", qk.pending) == ok
            assert await tr.call("SCARD", "asynq:queues") >= 1
        finally:
            await anyio.to_thread.run_sync(cluster.restart_node, master_port)
            await anyio.to_thread.run_sync(cluster.wait_healthy, 60.0)


async def test_many_concurrent_calls_wait_for_a_connection(
    redis_cluster: RunningCluster, unique_queue: str
) -> None:
    """redis-py raises MaxConnectionsError past its pool size; the transport makes callers wait."""
    opt = RedisClusterClientOpt(addrs=redis_cluster.addrs, pool_size=8)
    async with Client(opt) as client:
        results: list[str] = []

        async def one(i: int) -> None:
            info = await client.enqueue(Task("t:burst", {"i": i}), queue=unique_queue)
            results.append(info.id)

        async with anyio.create_task_group() as tg:
            for i in range(400):
                tg.start_soon(one, i)
        assert len(set(results)) == 400
        assert await client._broker.transport.call("LLEN", queue_keys(unique_queue).pending) == 400


@pytest.mark.slow
async def test_subscription_moves_to_a_live_node_after_its_node_dies(redis_cluster: RunningCluster) -> None:
    cluster = redis_cluster.cluster
    sub = Transport.connect(RedisClusterClientOpt(addrs=redis_cluster.addrs))
    pub = Transport.connect(RedisClusterClientOpt(addrs=redis_cluster.addrs), retry=RetryPolicy(budget=30))
    got: list[bytes] = []
    killed: int | None = None

    async def listen() -> None:
        async for message in sub.subscribe("asynq:test-channel"):
            got.append(message)

    async def publish_until(message: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while message not in got:
            assert time.monotonic() < deadline, f"{message!r} not received within {timeout}s"
            await pub.publish("asynq:test-channel", message.decode())
            await anyio.sleep(0.3)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await publish_until(b"before", 10)
            assert sub.subscribed_node is not None
            killed = int(sub.subscribed_node.rsplit(":", 1)[1])
            cluster.kill_node(killed)
            await publish_until(b"after", 40)
            assert sub.subscribed_node is not None and sub.subscribed_node != f"127.0.0.1:{killed}"
            tg.cancel_scope.cancel()
    finally:
        await sub.aclose()
        await pub.aclose()
        if killed is not None:
            await anyio.to_thread.run_sync(cluster.restart_node, killed)
            await anyio.to_thread.run_sync(cluster.wait_healthy, 60.0)


async def test_a_subscription_whose_first_slot_map_load_fails_keeps_retrying() -> None:
    """No cluster node answers yet: the subscription waits and re-tries (it used to end with an
    UnboundLocalError, taking the server's cancel listener with it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])  # closed again below: nothing listens there
    sub = Transport.connect(RedisClusterClientOpt(addrs=[f"127.0.0.1:{port}"]), retry=RetryPolicy(budget=1))
    failed: list[BaseException] = []

    async def listen() -> None:
        try:
            async for _ in sub.subscribe("asynq:test-channel"):
                pass
        except Exception as exc:
            failed.append(exc)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await anyio.sleep(0.5)
            tg.cancel_scope.cancel()
    finally:
        await sub.aclose()
    assert failed == [] and sub.subscribed_node is None
