"""Chaos 2-5: Redis itself fails under steady load (a producer enqueueing, two servers processing).

Each test owns its Redis (a fresh DevCluster or redis-server), injects one fault, and then checks
that every acknowledged enqueue ran exactly once, nothing is left in any state list, no enqueue
failed, and no task was ever seen active without a lease. The figures are printed (``pytest -s``)."""

from __future__ import annotations

import signal
import tempfile
import uuid
from pathlib import Path

import anyio
import pytest
from harness import (
    RedisProcess,
    RunLog,
    assert_nothing_lost,
    master_port,
    own_cluster,
    run_with_fault,
)
from redis.crc import key_slot
from test_resharding import migrate_slot
from workerproc import wait_until

from asynq_aio import RedisClusterClientOpt, parse_redis_url
from asynq_aio._devcluster import DevCluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def new_queue(kind: str) -> str:
    return f"chaos_{kind}_{uuid.uuid4().hex[:6]}"


async def wait_new_master(cluster: DevCluster, queue: str, old_port: int, timeout: float = 30) -> None:
    async def moved() -> bool:
        try:
            return await anyio.to_thread.run_sync(master_port, cluster, queue) != old_port
        except AssertionError:  # no master serves the slot for a moment
            return False

    await wait_until(moved, timeout, interval=0.1, what="a replica to take over the slot")


async def test_master_failover_loses_nothing(tmp_path: Path) -> None:
    queue = new_queue("failover")
    runlog = RunLog(tmp_path / "runs.log")
    with own_cluster() as cluster:
        port = master_port(cluster, queue)

        async def fault() -> None:
            cluster.kill_node(port)  # SIGKILL the master of the queue's slot
            await wait_new_master(cluster, queue, port)

        run = await run_with_fault(
            RedisClusterClientOpt(addrs=cluster.addrs), queue, runlog, fault, lease=8, after=2.0
        )
    assert_nothing_lost(
        "master SIGKILL, replica failover",
        run,
        runlog,
        notes=f"promotion_s={run.fault_done_at - run.fault_at:.1f}",
    )


async def test_live_resharding_under_load_loses_nothing(tmp_path: Path) -> None:
    queue = new_queue("reshard")
    runlog = RunLog(tmp_path / "runs.log")
    moved: list[int] = []
    with own_cluster() as cluster:
        old = master_port(cluster, queue)

        async def fault() -> None:
            _, _, keys = await anyio.to_thread.run_sync(
                migrate_slot, cluster.addrs, key_slot(queue.encode()), 0.02
            )
            moved.append(keys)

        run = await run_with_fault(
            RedisClusterClientOpt(addrs=cluster.addrs), queue, runlog, fault, lease=5, work=0.2, preload=300
        )
        assert master_port(cluster, queue) != old
    assert moved and moved[0] > 0
    assert_nothing_lost(
        "live slot migration",
        run,
        runlog,
        notes=f"keys_moved={moved[0]} migration_s={run.fault_done_at - run.fault_at:.1f}",
    )


async def test_single_redis_restart_with_aof_loses_nothing(tmp_path: Path) -> None:
    queue = new_queue("aof")
    runlog = RunLog(tmp_path / "runs.log")
    data_dir = Path(tempfile.mkdtemp(prefix="asynq-aio-aof-", dir=tmp_path))
    redis = RedisProcess(data_dir)
    redis.start()
    try:

        async def fault() -> None:
            redis.kill(signal.SIGKILL)  # no shutdown save: only the fsynced AOF survives
            await anyio.sleep(1.0)
            await anyio.to_thread.run_sync(redis.start)  # same port, same directory

        run = await run_with_fault(parse_redis_url(redis.url), queue, runlog, fault, lease=5)
    finally:
        redis.stop()
    assert_nothing_lost(
        "single Redis SIGKILL + restart (AOF, fsync always)",
        run,
        runlog,
        notes=f"down_s={run.fault_done_at - run.fault_at:.1f}",
    )


async def test_master_paused_past_the_client_timeouts_loses_nothing(tmp_path: Path) -> None:
    queue = new_queue("sigstop")
    runlog = RunLog(tmp_path / "runs.log")
    pause = 2.5
    # node timeout above the pause: this is a stall, not a failover
    with own_cluster(node_timeout_ms=8000) as cluster:
        port = master_port(cluster, queue)
        opt = RedisClusterClientOpt(addrs=cluster.addrs, read_timeout=0.5, dial_timeout=0.5)

        async def fault() -> None:
            cluster.kill_node(port, signal.SIGSTOP, wait=False)
            try:
                await anyio.sleep(pause)
            finally:
                cluster.kill_node(port, signal.SIGCONT, wait=False)

        run = await run_with_fault(opt, queue, runlog, fault, lease=5, after=2.0)
    assert_nothing_lost(
        "master SIGSTOP past client timeouts",
        run,
        runlog,
        notes=f"pause_s={pause} read_timeout_s=0.5",
    )
