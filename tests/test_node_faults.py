"""One master of a cluster stalls or slows: only its own queues may be delayed.

One worker serves two queues on two different masters, reaching every node through a TCP proxy
(tests/faultproxy.py) via ``RedisClusterClientOpt.address_map``. One master's proxy is then stalled
(it runs nothing and answers nothing, like a SIGSTOPped node) for longer than a lease, or slowed;
the other queue must keep at least half its normal pace, and afterwards every task has run, none
is left in active, and the healthy queue ran nothing twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import anyio
import pytest
from conftest import RunningCluster
from faultproxy import proxied_cluster, report_fault_figures
from redis.crc import key_slot
from workerproc import RawRedis, wait_until

from asynq_aio import Client, Config, RedisClusterClientOpt, ServeMux, Server, Task
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.admin import Admin
from asynq_aio.protocol.keys import ALL_QUEUES, queue_keys
from asynq_aio.protocol.topology import Shard, shard_for_slot

pytestmark = [pytest.mark.anyio, pytest.mark.cluster, pytest.mark.slow]

N = 600  # tasks per queue: more than the worker runs before the fault ends
WORK = 0.05  # seconds per handler call


async def _master_of_key(addrs: list[str]) -> Callable[[str], str]:
    """The address of the master that serves a key, as the cluster's shards say now."""
    transport = Transport.connect(RedisClusterClientOpt(addrs=addrs))
    try:
        shards: list[Shard] = await Admin(transport).cluster_shards()
    finally:
        await transport.aclose()

    def master_of(key: str) -> str:
        shard = shard_for_slot(shards, key_slot(key.encode()))
        assert shard is not None and shard.master is not None
        return shard.master.addr

    return master_of


async def _two_queues_on_two_masters(addrs: list[str], tag: str) -> tuple[str, str, str]:
    """Queue names on different masters, and the address of the first one's master."""
    master_of = await _master_of_key(addrs)

    def master(queue: str) -> str:
        return master_of(queue_keys(queue).pending)

    names = [f"nf_{tag}_{i}" for i in range(50)]
    a = names[0]
    b = next(n for n in names if master(n) != master(a))
    return a, b, master(a)


async def _run_fault(redis_cluster: RunningCluster, fault: str) -> None:
    addrs = list(redis_cluster.addrs)
    qa, qb, master_a = await _two_queues_on_two_masters(addrs, f"{fault}{int(time.time())}")
    runs: Counter[str] = Counter()
    done_at: dict[str, list[float]] = {qa: [], qb: []}
    mux = ServeMux()

    async def handler(task: Task) -> None:
        await anyio.sleep(WORK)
        key = task.payload.decode()
        runs[key] += 1
        done_at[key.split("/")[0]].append(time.monotonic())

    mux.handle_func("t", handler)
    async with Client(RedisClusterClientOpt(addrs=addrs)) as client:
        for q in (qa, qb):
            await client.enqueue_many([Task("t", f"{q}/{i}".encode()) for i in range(N)], queue=q)
    cfg = Config(
        concurrency=4,
        queues={qa: 1, qb: 1},
        lease_duration=3.0,
        heartbeat_interval=0.5,
        recovery_interval=0.5,
        recovery_skew=0.0,
        forward_interval=0.1,
        retry_delay_func=lambda n, e, t: 0.0,
    )
    raw = RawRedis("cluster", None, addrs)
    try:
        with proxied_cluster(addrs) as (proxies, opt):
            with anyio.fail_after(120):
                async with Server(opt, cfg).serve(mux):
                    await anyio.sleep(2.0)
                    t0 = time.monotonic()
                    await anyio.sleep(2.0)
                    t1 = time.monotonic()
                    if fault == "stall":
                        proxies[master_a].stall()
                    else:
                        proxies[master_a].set_delay(0.3)
                    await anyio.sleep(4.0)  # longer than a lease
                    t2 = time.monotonic()
                    proxies[master_a].resume()
                    proxies[master_a].set_delay(0.0)

                    async def all_ran() -> bool:
                        return len(runs) == 2 * N

                    try:
                        await wait_until(all_ran, 60, what="every task ran")
                    except AssertionError:
                        missing = sorted({f"{q}/{i}" for q in (qa, qb) for i in range(N)} - set(runs))
                        states = {}
                        for q in (qa, qb):
                            qk = queue_keys(q)
                            states[q] = {
                                "pending": await raw.cmd("LLEN", qk.pending),
                                "active": await raw.cmd("LLEN", qk.active),
                                "lease": await raw.cmd("ZRANGE", qk.lease, 0, -1, "WITHSCORES"),
                                "retry": await raw.cmd("ZCARD", qk.retry),
                                "archived": await raw.cmd("ZCARD", qk.archived),
                            }
                        raise AssertionError(f"not run: {missing[:10]} ({len(missing)}); {states}") from None

                    async def settled() -> bool:
                        for q in (qa, qb):
                            if int(await raw.cmd("LLEN", queue_keys(q).active)):
                                return False
                            if int(await raw.cmd("ZCARD", queue_keys(q).lease)):
                                return False
                        return True

                    await wait_until(settled, 30, what="nothing left in active")
        before = sum(1 for t in done_at[qb] if t0 <= t < t1) / (t1 - t0)
        during = sum(1 for t in done_at[qb] if t1 <= t < t2) / (t2 - t1)
        assert before > 0

        def per_half_second(q: str) -> list[int]:
            return [sum(1 for t in done_at[q] if t0 + i / 2 <= t < t0 + (i + 1) / 2) for i in range(24)]

        pace = (
            f"healthy queue: {before:.0f}/s before, {during:.0f}/s during the {fault}; "
            f"completions per 0.5 s from 2 s before: {per_half_second(qb)} (the faulty queue's: "
            f"{per_half_second(qa)})"
        )
        failed = {q: int(await raw.cmd("GET", queue_keys(q).failed) or 0) for q in (qa, qb)}
        report_fault_figures(
            f"one master {'stalled 4 s' if fault == 'stall' else 'slowed by 300 ms per reply'} (lease 3 s)",
            enqueued=2 * N,
            ran=len(runs),
            lost=2 * N - len(runs),
            duplicate_runs=sum(c - 1 for c in runs.values() if c > 1),
            failed_attempts=sum(failed.values()),
            healthy_per_s_before=round(before),
            healthy_per_s_during=round(during),
        )
        assert during >= before / 2, pace
        assert sorted(runs) == sorted(f"{q}/{i}" for q in (qa, qb) for i in range(N))  # none lost
        assert [k for k, c in runs.items() if c > 1 and k.startswith(qb)] == []
    finally:
        await raw.aclose()


async def test_a_stalled_master_delays_only_its_own_queues(redis_cluster: RunningCluster) -> None:
    await _run_fault(redis_cluster, "stall")


async def test_a_slow_master_delays_only_its_own_queues(redis_cluster: RunningCluster) -> None:
    await _run_fault(redis_cluster, "slow")


async def test_a_stalled_master_holding_the_queue_list_does_not_stop_enqueues_to_the_others(
    redis_cluster: RunningCluster,
) -> None:
    """asynq:queues lives on one master. Its listing goes beside an enqueue, not before it: with that
    master stalled, an enqueue into a queue on another master stores its task and returns (it used
    to raise RedisUnavailableError once the retry budget ran out, the task not stored), and the
    queue is listed once the master answers again."""
    addrs = list(redis_cluster.addrs)
    master_of = await _master_of_key(addrs)
    list_master = master_of(ALL_QUEUES)
    tag = int(time.time())
    queue = next(
        n for n in (f"ql_{tag}_{i}" for i in range(50)) if master_of(queue_keys(n).pending) != list_master
    )
    raw = RawRedis("cluster", None, addrs)
    try:
        with proxied_cluster(addrs) as (proxies, opt):
            async with Client(opt, enqueue_timeout=15.0) as client:
                await client.ping()  # the slot map is known before the stall
                proxies[list_master].stall()
                try:
                    started = time.monotonic()
                    with anyio.fail_after(30):
                        info = await client.enqueue(Task("t", b"while stalled"), queue=queue)
                    # it waited for the listing at most REGISTER_WAIT (1 s), not the 15 s retry
                    # budget the listing itself goes on with in the background
                    assert time.monotonic() - started < 7.5
                    assert await raw.cmd("LRANGE", queue_keys(queue).pending, 0, -1) == [info.id.encode()]
                    assert await raw.cmd("SISMEMBER", ALL_QUEUES, queue) == 0
                finally:
                    proxies[list_master].resume()
                await client.enqueue(Task("t", b"after"), queue=queue)

                async def listed() -> bool:
                    return bool(await raw.cmd("SISMEMBER", ALL_QUEUES, queue))

                await wait_until(listed, 15, what="the queue listed once its master answers")
    finally:
        await raw.cmd("SREM", ALL_QUEUES, queue)
        await raw.cmd("DEL", queue_keys(queue).pending)
        await raw.aclose()


async def test_a_task_due_on_a_healthy_master_is_forwarded_while_another_master_stalls(
    redis_cluster: RunningCluster,
) -> None:
    """The forwarder looks at the queues in batches per node: with one master stalled for longer
    than a round's budget (5 s), a task scheduled on another master still comes due and runs. A look
    at all the queues in one batch would wait on the stalled master and lose every answer, so
    nothing would be forwarded until the stall ends."""
    addrs = list(redis_cluster.addrs)
    qa, qb, master_a = await _two_queues_on_two_masters(addrs, f"due{int(time.time())}")
    ran: list[float] = []

    async def handler(task: Task) -> None:
        ran.append(time.monotonic())

    cfg = Config(concurrency=2, queues={qa: 1, qb: 1}, forward_interval=0.2, shutdown_timeout=1.0)
    with proxied_cluster(addrs) as (proxies, opt):
        async with Client(opt) as client, Server(opt, cfg).serve(handler):
            await client.ping()  # the client knows the slot map before the stall
            await anyio.sleep(1.0)  # the worker is up and looking
            proxies[master_a].stall()
            try:
                stalled = time.monotonic()
                await client.enqueue(Task("t", b"due soon"), queue=qb, process_in=1.0)
                with anyio.fail_after(20):
                    while not ran:
                        await anyio.sleep(0.05)
                # well before the stall ends (15 s): within a round's budget of falling due
                assert ran[0] - stalled < 9.0
            finally:
                proxies[master_a].resume()
