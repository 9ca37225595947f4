"""Durable enqueue: what Redis replication can lose, shown on real processes, and the mode that
closes the hole. A replica is cut off, the master acknowledges writes it cannot replicate, dies, and
the stale replica takes over: the plain enqueue was acknowledged and is gone; the durable one
raised NotDurableError instead of claiming success; a durable enqueue made while the replica was
attached survives."""

from __future__ import annotations

import signal
import uuid
from typing import Any

import anyio
import pytest
import redis
from harness import JOB_TYPE, master_port, own_cluster
from test_chaos_redis_faults import wait_new_master

from asynq_aio import Client, RedisClusterClientOpt, RetryPolicy, Task, TaskInfo
from asynq_aio._client import Durability
from asynq_aio._errors import NotDurableError
from asynq_aio.protocol.keys import queue_keys

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _cmd(port: int, *args: Any) -> Any:
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


async def test_durable_enqueue_is_never_acknowledged_when_no_replica_has_it() -> None:
    queue = f"chaos_durable_{uuid.uuid4().hex[:6]}"
    with own_cluster() as cluster:
        opt = RedisClusterClientOpt(addrs=cluster.addrs)
        async with (
            Client(opt, retry=RetryPolicy(budget=30)) as plain,
            Client(opt, durable=Durability(replicas=1, timeout=0.5)) as durable,
        ):
            kept = await durable.enqueue(Task(JOB_TYPE, b"replicated"), queue=queue)
            many = await durable.enqueue_many(
                [Task(JOB_TYPE, str(i).encode()) for i in range(5)], queue=queue
            )
            assert all(isinstance(x, TaskInfo) for x in many)

            old = master_port(cluster, queue)
            me = next(n for n in cluster.status() if n.port == old)
            replica = next(n.port for n in cluster.status() if n.master_id == me.node_id)
            # Cut the replica off: freeze it, and make the master drop its replication link, so
            # nothing written from now on reaches it (not even into its socket buffer).
            cluster.kill_node(replica, signal.SIGSTOP, wait=False)
            try:
                _cmd(old, "CLIENT", "KILL", "TYPE", "replica")
                acked = await plain.enqueue(Task(JOB_TYPE, b"acknowledged"), queue=queue)
                with pytest.raises(NotDurableError) as raised:
                    await durable.enqueue(Task(JOB_TYPE, b"refused"), queue=queue)
                refused = raised.value
                assert (refused.acked, refused.wanted) == (0, 1)
                assert isinstance(refused.info, TaskInfo)
                outcomes = await durable.enqueue_many(
                    [Task(JOB_TYPE, b"m1"), Task(JOB_TYPE, b"m2")], queue=queue
                )
                assert all(isinstance(x, NotDurableError) for x in outcomes)
                # the task IS written on the master: NotDurableError is not "nothing stored"
                tr = plain._broker.transport
                assert await tr.call("EXISTS", queue_keys(queue).task(refused.info.id)) == 1
                # the master dies; the stale replica takes over
                cluster.kill_node(old)
            finally:
                cluster.kill_node(replica, signal.SIGCONT, wait=False)
            await anyio.sleep(0.2)
            _cmd(replica, "CLUSTER", "FAILOVER", "TAKEOVER")
            await wait_new_master(cluster, queue, old)

            async def exists(info: TaskInfo) -> bool:
                return bool(await tr.call("EXISTS", queue_keys(queue).task(info.id)))

            # what survived the failover
            assert await exists(kept)
            for info in many:
                assert isinstance(info, TaskInfo) and await exists(info)
            assert not await exists(acked), "the acknowledged plain enqueue should be lost (the hole)"
            assert not await exists(refused.info)  # lost too, but its caller was told
