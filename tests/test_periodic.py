"""PeriodicTaskManager: entries synced from a provider function, on real Redis (single and cluster)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

import pytest
from conftest import RedisTarget
from test_scheduler import fire_unix, heartbeat_entries, pending_ids, tasks_of_type
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import RedisClientOpt, Task
from asynq_aio.connection import RedisConnOpt
from asynq_aio.periodic import PeriodicTaskConfig, PeriodicTaskManager
from asynq_aio.protocol.codec import decode_task_message
from asynq_aio.protocol.keys import queue_keys, scheduler_history_key
from asynq_aio.scheduler import EntryOptions, Scheduler


@pytest.fixture
def opt(redis_target: RedisTarget) -> RedisConnOpt:
    return conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)


@pytest.fixture
async def raw(redis_target: RedisTarget) -> AsyncIterator[RawRedis]:
    r = RawRedis(redis_target.kind, redis_target.url, redis_target.addrs)
    try:
        yield r
    finally:
        await r.aclose()


@pytest.mark.anyio
async def test_manager_sync_diffs_entries_and_skips_invalid_configs() -> None:
    sched = Scheduler(RedisClientOpt())
    manual = sched.register("@hourly", Task("manual"))
    configs: list[PeriodicTaskConfig] = [
        PeriodicTaskConfig("@daily", Task("a")),
        PeriodicTaskConfig("@daily", Task("a")),  # duplicate: one entry
        PeriodicTaskConfig("@hourly", Task("manual")),  # the app's own entry: not taken over
        PeriodicTaskConfig("bogus", Task("bad")),
    ]

    def provider() -> Sequence[PeriodicTaskConfig]:  # a plain function works too
        return list(configs)

    mgr = PeriodicTaskManager(sched, provider, sync_interval=60)
    r1 = await mgr.sync()
    assert len(r1.added) == 1 and r1.removed == [] and r1.invalid == 1
    a_id = r1.added[0]
    assert {e.id for e in sched.entries()} == {manual, a_id}
    configs[:] = [PeriodicTaskConfig("@daily", Task("b"), EntryOptions(queue="x"))]
    r2 = await mgr.sync()
    assert r2.removed == [a_id] and len(r2.added) == 1
    assert {e.id for e in sched.entries()} == {manual, r2.added[0]}  # the manual entry stays
    assert mgr.entry_ids == set(r2.added)
    assert (await mgr.sync()).added == []  # unchanged config: nothing to do

    def broken() -> Sequence[PeriodicTaskConfig]:
        raise RuntimeError("config store down")

    with pytest.raises(RuntimeError, match="config store down"):
        async with PeriodicTaskManager(sched, broken).serve():
            pass  # pragma: no cover - the first sync fails before the body runs


@pytest.mark.anyio
async def test_a_failing_provider_keeps_the_entries(caplog: pytest.LogCaptureFixture) -> None:
    sched = Scheduler(RedisClientOpt())
    calls = 0

    async def flaky() -> Sequence[PeriodicTaskConfig]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("config database unreachable")
        return [PeriodicTaskConfig("@daily", Task("kept"))]

    mgr = PeriodicTaskManager(sched, flaky, sync_interval=0.01)
    (kept,) = (await mgr.sync()).added
    with pytest.raises(ConnectionError):
        await mgr.sync()
    assert [e.id for e in sched.entries()] == [kept] and mgr.entry_ids == {kept}
    with caplog.at_level(logging.ERROR, logger="asynq_aio.periodic"):
        await mgr._sync_loop_once()
    assert "keeping the current entries" in caplog.text
    assert [e.id for e in sched.entries()] == [kept]
    with pytest.raises(ValueError, match="sync_interval"):
        PeriodicTaskManager(sched, flaky, sync_interval=0)


@pytest.mark.anyio
async def test_periodic_task_manager_adds_and_removes_entries_as_the_provider_changes(
    opt: RedisConnOpt, raw: RawRedis, unique_queue: str
) -> None:
    q = unique_queue
    configs = [PeriodicTaskConfig("0 0 1 1 *", Task("report:a"), EntryOptions(queue=q))]

    async def provider() -> Sequence[PeriodicTaskConfig]:
        return list(configs)

    sched = Scheduler(opt, heartbeat_interval=30)
    manual = sched.register("0 0 1 1 *", Task("manual"), queue=q)
    mgr = PeriodicTaskManager(sched, provider, sync_interval=0.1)

    async def listed() -> set[str]:
        return {e.id for e in await heartbeat_entries(raw, sched.id)}

    async with mgr.serve():
        (a_id,) = mgr.entry_ids

        async def initial() -> bool:
            return await listed() == {manual, a_id}

        await wait_until(initial, 5, what="the provider's first entry")

        configs.append(PeriodicTaskConfig("@every 1s", Task("report:b"), EntryOptions(queue=q, max_retry=1)))
        configs.append(PeriodicTaskConfig("not a spec", Task("bad")))  # skipped, the rest still syncs

        async def added() -> bool:
            return len(await listed()) == 3

        await wait_until(added, 5, what="the added entry")
        (b_id,) = mgr.entry_ids - {a_id}

        async def b_fired() -> bool:
            return len(await tasks_of_type(raw, q, "report:b")) >= 1

        await wait_until(b_fired, 5, what="a task from the synced @every entry")
        msg = decode_task_message(
            await raw.cmd("HGET", queue_keys(q).task((await pending_ids(raw, q))[0]), "msg")
        )
        assert msg.retry == 1

        configs[:] = [configs[1]]  # the provider drops report:a

        async def removed() -> bool:
            return await listed() == {manual, b_id}

        await wait_until(removed, 5, what="the removed entry")
        assert mgr.entry_ids == {b_id}
    await raw.cmd("DEL", scheduler_history_key(b_id))


@pytest.mark.anyio
async def test_two_managers_on_one_provider_enqueue_each_fire_once(
    opt: RedisConnOpt, raw: RawRedis, unique_queue: str
) -> None:
    q = unique_queue

    def provider() -> Sequence[PeriodicTaskConfig]:
        return [PeriodicTaskConfig("@every 1s", Task("report:both", {"q": q}), EntryOptions(queue=q))]

    one = PeriodicTaskManager(Scheduler(opt), provider, sync_interval=0.2)
    two = PeriodicTaskManager(Scheduler(opt), provider, sync_interval=0.2)
    async with one.serve(), two.serve():
        assert one.entry_ids == two.entry_ids  # same config, same entry ID in every process

        async def three() -> bool:
            return len(await pending_ids(raw, q)) >= 3

        await wait_until(three, 8, what="three fires")
    fired = sorted(fire_unix(i) for i in await pending_ids(raw, q))
    assert fired == list(range(fired[0], fired[0] + len(fired))), f"duplicate or lost fire: {fired}"
    (eid,) = one.entry_ids
    await raw.cmd("DEL", scheduler_history_key(eid))
