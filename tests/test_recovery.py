"""Crash recovery: a worker killed mid-task loses its lease, and one other server runs the task again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import RedisTarget
from workerproc import RawRedis, conn_opt, done_key, runs_key, started_key, wait_until

from asynq_aio import Client, Config, ServeMux, Server, Task
from asynq_aio.protocol.broker import Broker
from asynq_aio.protocol.codec import decode_task_message
from asynq_aio.server.forwarder import forward_loop
from asynq_aio.server.recoverer import recover_once

pytestmark = pytest.mark.anyio

WORKERPROC = Path(__file__).with_name("workerproc.py")


def k(queue: str) -> Callable[[str], str]:
    return lambda suffix: f"asynq:{{{queue}}}:{suffix}"


async def counter(raw: RawRedis, key: str) -> int:
    v = await raw.cmd("GET", key)
    return int(v) if v is not None else 0


async def hgetall(raw: RawRedis, key: str) -> dict[str, bytes]:
    reply = await raw.cmd("HGETALL", key)
    if isinstance(reply, dict):
        return {kk.decode(): bytes(v) for kk, v in reply.items()}
    return {reply[i].decode(): bytes(reply[i + 1]) for i in range(0, len(reply), 2)}


def spawn_worker(target: RedisTarget, queue: str, log_path: Path) -> subprocess.Popen[bytes]:
    conn = ["--url", target.url] if target.kind == "single" else ["--cluster", ",".join(target.addrs or [])]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                str(WORKERPROC),
                "--queue",
                queue,
                *[str(a) for a in conn],
                "--lease",
                "2",
                "--heartbeat",
                "0.5",
                "--recovery",
                "0.5",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def test_killed_worker_task_is_recovered_and_run_exactly_once_more(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str, tmp_path: Path
) -> None:
    q = k(unique_queue)
    info = await client.enqueue(Task("recover:job", b"important"), queue=unique_queue)
    log_path = tmp_path / "worker.log"
    proc = spawn_worker(redis_target, unique_queue, log_path)
    try:

        async def worker_started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{log_path.read_text()}")
            return bool(await raw.cmd("EXISTS", started_key(unique_queue)))

        await wait_until(worker_started, 20, what="the worker process to start the task")
        assert await raw.cmd("GET", started_key(unique_queue)) == info.id.encode()

        mux = ServeMux()

        async def handler(task: Task) -> None:
            await raw.cmd("INCR", runs_key(unique_queue))
            await raw.cmd("SET", done_key(unique_queue), "recoverer")

        mux.handle_func("recover:", handler)
        config = Config(
            concurrency=2,
            queues={unique_queue: 1},
            lease_duration=2,
            heartbeat_interval=0.5,
            recovery_interval=0.5,
            recovery_skew=0.0,
            retry_delay_func=lambda n, e, t: 0.0,  # recovered tasks run again at once
            forward_interval=0.2,
            shutdown_timeout=1,
        )
        server = Server(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs), config)
        with anyio.fail_after(30):
            async with server.serve(mux):
                # While the worker lives, its heartbeat keeps extending the 2 s lease: nobody steals
                # the task even though it has run longer than one lease.
                await anyio.sleep(2.6)
                assert await counter(raw, runs_key(unique_queue)) == 1
                assert await raw.cmd("EXISTS", done_key(unique_queue)) == 0
                lease = await raw.cmd("ZSCORE", q("lease"), info.id)
                assert lease is not None and float(lease) > time.time()

                killed_at = time.monotonic()
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

                async def done() -> bool:
                    return bool(await raw.cmd("EXISTS", done_key(unique_queue)))

                await wait_until(done, 10, what="the recovered task to run")
                recovered_after = time.monotonic() - killed_at

                async def acked() -> bool:
                    return bool(await raw.cmd("EXISTS", q(f"t:{info.id}")) == 0)

                await wait_until(acked, 5, what="the recovered task to be acked")
                await anyio.sleep(0.5)  # room for a wrong second run to show up
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert await raw.cmd("GET", done_key(unique_queue)) == b"recoverer"
    assert await counter(raw, runs_key(unique_queue)) == 2  # the killed run + exactly one more
    assert recovered_after < 8
    # the lost attempt counts as a failure, the second as a success
    assert await counter(raw, q("processed")) == 2
    assert await counter(raw, q("failed")) == 1
    assert await raw.cmd("LLEN", q("active")) == 0
    assert await raw.cmd("ZCARD", q("lease")) == 0
    assert await raw.cmd("ZCARD", q("retry")) == 0
    assert await raw.cmd("LLEN", q("pending")) == 0


async def test_racing_recoverers_move_each_expired_task_once(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    opt = conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)
    retrying = [await client.enqueue(Task("r", str(i)), queue=unique_queue) for i in range(5)]
    last_try = await client.enqueue(Task("r", b"last"), queue=unique_queue, max_retry=0)
    ids = [t.id for t in [*retrying, last_try]]

    async with Client(opt) as c1, Client(opt) as c2:
        b1, b2 = c1._broker, c2._broker
        got = await b1.dequeue(unique_queue, 10, time.time() + 60)
        assert isinstance(got, list)
        assert sorted(d.task_id for d in got) == sorted(ids)
        for tid in ids:
            await raw.cmd("ZADD", q("lease"), 1, tid)  # expire the leases by hand

        # Force the race: neither recoverer claims anything before both have listed the expired
        # leases, so both try to move every one of them.
        listed = 0
        both_listed = anyio.Event()

        def barrier(broker: Broker) -> None:
            original = broker.expired_leases

            async def expired_leases(queue: str, cutoff: float, *, limit: int = 100) -> list[Any]:
                nonlocal listed
                found = await original(queue, cutoff, limit=limit)
                assert len(found) == len(ids)
                listed += 1
                if listed == 2:
                    both_listed.set()
                with anyio.fail_after(5):
                    await both_listed.wait()
                return found

            broker.expired_leases = expired_leases  # type: ignore[method-assign]

        barrier(b1)
        barrier(b2)
        results: list[int] = []

        async def recover(broker: Broker) -> None:
            results.append(await recover_once(broker, [unique_queue]))

        async with anyio.create_task_group() as tg:
            tg.start_soon(recover, b1)
            tg.start_soon(recover, b2)

    assert listed == 2
    assert sum(results) == len(ids)
    assert sorted(m.decode() for m in await raw.cmd("ZRANGE", q("retry"), 0, -1)) == sorted(
        t.id for t in retrying
    )
    assert await raw.cmd("ZRANGE", q("archived"), 0, -1) == [last_try.id.encode()]
    for t in retrying:
        fields = await hgetall(raw, q(f"t:{t.id}"))
        assert fields["state"] == b"retry"
        msg = decode_task_message(fields["msg"])
        assert msg.retried == 1
        assert msg.error_msg == "task lease expired"
    assert await counter(raw, q("failed")) == len(ids)
    assert await counter(raw, q("processed")) == len(ids)
    assert await raw.cmd("LLEN", q("active")) == 0
    assert await raw.cmd("ZCARD", q("lease")) == 0
    # and a later round finds nothing left to do
    async with Client(opt) as c3:
        assert await recover_once(c3._broker, [unique_queue]) == 0


async def test_recoverer_ignores_live_leases_and_clears_a_lease_without_a_hash(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = k(unique_queue)
    info = await client.enqueue(Task("r"), queue=unique_queue)
    got = await client._broker.dequeue(unique_queue, 1, time.time() + 60)
    assert isinstance(got, list) and [d.task_id for d in got] == [info.id]
    # an operator deleted this one's hash while it was active, and its worker died
    await raw.cmd("LPUSH", q("active"), "ghost")
    await raw.cmd("ZADD", q("lease"), 1, "ghost")

    assert await recover_once(client._broker, [unique_queue]) == 1

    assert await raw.cmd("LRANGE", q("active"), 0, -1) == [info.id.encode()]
    assert await raw.cmd("ZRANGE", q("lease"), 0, -1) == [info.id.encode()]
    assert await raw.cmd("ZCARD", q("retry")) == 0
    assert await raw.cmd("ZCARD", q("archived")) == 0
    assert (await hgetall(raw, q(f"t:{info.id}")))["state"] == b"active"


async def test_orphan_in_active_without_lease_is_healed(single_redis_url: str, unique_queue: str) -> None:
    target = RedisTarget(kind="single", url=single_redis_url, addrs=None)
    q = k(unique_queue)
    raw = RawRedis(target.kind, target.url, target.addrs)
    try:
        async with Client(conn_opt(target.kind, target.url, target.addrs)) as client:
            info = await client.enqueue(Task("orphan"), queue=unique_queue)
            # what a script aborted half-way (Asynq on a migrating slot) leaves behind
            await raw.cmd("LREM", q("pending"), 0, info.id)
            await raw.cmd("LPUSH", q("active"), info.id)
            await raw.cmd("HSET", q(f"t:{info.id}"), "state", "active")
            await raw.cmd("HDEL", q(f"t:{info.id}"), "pending_since")

            ran = anyio.Event()
            mux = ServeMux()

            async def handler(task: Task) -> None:
                ran.set()

            mux.handle_func("orphan", handler)
            config = Config(
                concurrency=1,
                queues={unique_queue: 1},
                lease_duration=2,
                heartbeat_interval=0.5,
                recovery_interval=0.5,
                recovery_skew=0.0,
                retry_delay_func=lambda n, e, t: 0.0,  # recovered tasks run again at once
                forward_interval=0.2,
                shutdown_timeout=1,
            )
            server = Server(conn_opt(target.kind, target.url, target.addrs), config)
            async with server.serve(mux):
                with anyio.move_on_after(5):
                    await ran.wait()
            assert ran.is_set(), "the orphaned task was never run"
            assert await raw.cmd("LLEN", q("active")) == 0
    finally:
        await raw.aclose()


async def test_stalled_worker_does_not_ack_a_task_another_server_recovered(
    single_redis_url: str, unique_queue: str, tmp_path: Path
) -> None:
    """A worker whose event loop stalls past its lease (CPU-bound code) must not report an outcome
    for the task afterwards: by then another server has recovered it and is running it again."""
    target = RedisTarget(kind="single", url=single_redis_url, addrs=None)
    q = k(unique_queue)
    raw = RawRedis(target.kind, target.url, target.addrs)
    procs: list[subprocess.Popen[bytes]] = []
    log_path = tmp_path / "worker.log"
    stalled = anyio.Event()
    try:
        mux = ServeMux()

        async def stalling(task: Task) -> None:
            # start the second server only now, so that it cannot take the task first
            procs.append(spawn_worker(target, unique_queue, log_path))
            time.sleep(6)  # blocks the whole loop: no heartbeat extends the 2 s lease
            stalled.set()

        mux.handle_func("recover:stall", stalling)
        config = Config(
            concurrency=1,
            queues={unique_queue: 1},
            lease_duration=2,
            heartbeat_interval=0.5,
            recovery_interval=60,
            forward_interval=60,
            shutdown_timeout=1,
        )
        async with Client(conn_opt(target.kind, target.url, target.addrs)) as client:
            server = Server(conn_opt(target.kind, target.url, target.addrs), config)
            with anyio.fail_after(20):
                async with server.serve(mux):
                    info = await client.enqueue(Task("recover:stall"), queue=unique_queue)
                    await stalled.wait()
                    await anyio.sleep(1.0)  # the stalled worker's outcome (if any) is written now

        assert await raw.cmd("GET", started_key(unique_queue)) == info.id.encode(), (
            "the second server did not recover the task in time: " + log_path.read_text()
        )
        # The second server is still running the task: its record and lease must be intact.
        fields = await hgetall(raw, q(f"t:{info.id}"))
        assert fields.get("state") == b"active"
        assert await raw.cmd("ZSCORE", q("lease"), info.id) is not None
        assert await raw.cmd("LRANGE", q("active"), 0, -1) == [info.id.encode()]
        # only the recovery was counted (as a failure); the stalled run reported nothing
        assert await counter(raw, q("processed")) == 1
        assert await counter(raw, q("failed")) == 1
    finally:
        for p in procs:
            p.kill()
            p.wait()
        await raw.aclose()


async def test_the_background_looks_answer_per_queue_and_one_bad_queue_hides_nothing(
    redis_target: RedisTarget, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """The background loops' batched looks (next_due.lua, holds_tasks.lua, cleanup_due.lua): one
    answer per queue; a queue whose key holds the wrong type has its error in its place, the others
    answer, and a forwarder round still forwards the queue that is due."""
    broker = client._broker
    good, idle, bad = (f"{unique_queue}_{s}" for s in ("good", "idle", "bad"))
    later = await client.enqueue(Task("r"), queue=good, process_in=60)
    await raw.cmd("SET", k(bad)("scheduled"), "not a sorted set")
    dues = await broker.next_dues([good, idle, bad])
    assert dues[0] == pytest.approx(time.time() + 60, abs=2) and dues[1] is None
    assert isinstance(dues[2], Exception) and "WRONGTYPE" in str(dues[2])
    assert await broker.holds_tasks([good, idle]) == [False, False]
    await raw.cmd("SET", k(bad)("completed"), "not a sorted set")
    cleanup = await broker.needs_cleanup([good, bad])
    assert cleanup[0] is False and isinstance(cleanup[1], Exception) and "WRONGTYPE" in str(cleanup[1])
    got = await broker.dequeue(good, 1, time.time() + 60)  # nothing pending: nothing taken
    assert got == []
    now = await client.enqueue(Task("r"), queue=good)
    assert [d.task_id for d in await broker.dequeue(good, 1, time.time() + 60)] == [now.id]  # type: ignore[union-attr]
    assert await broker.holds_tasks([good, idle]) == [True, False]

    # a task due now in `good`, beside the broken `bad`: the round forwards it
    await raw.cmd("ZADD", k(good)("scheduled"), time.time() - 1, later.id)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(forward_loop, broker, [bad, good, idle], 0.05)
            while await raw.cmd("LRANGE", k(good)("pending"), 0, -1) != [later.id.encode()]:
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()

    names = await broker.nodes_of([f"{unique_queue}_{i}" for i in range(30)])
    if redis_target.kind == "single":
        assert set(names) == {""}
    else:  # 30 queue names land on all three masters
        assert len(set(names)) == 3 and "" not in names
