"""Scheduler and PeriodicTaskManager against real Redis (single and cluster): fires, options, hooks,
once-per-fire across schedulers, heartbeats and history in Asynq's format."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import RedisTarget
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import (
    Client,
    DuplicateTaskError,
    InvalidQueueName,
    InvalidTaskError,
    RedisClientOpt,
    Task,
    TaskInfo,
)
from asynq_aio.connection import RedisConnOpt
from asynq_aio.periodic import PeriodicTaskConfig, PeriodicTaskManager
from asynq_aio.protocol.asynq_pb2 import SchedulerEnqueueEvent, SchedulerEntry
from asynq_aio.protocol.codec import decode_task_message
from asynq_aio.protocol.keys import (
    ALL_SCHEDULERS,
    fire_claim_key,
    queue_keys,
    scheduler_entries_key,
    scheduler_history_key,
)
from asynq_aio.protocol.scheduler_store import SETTLED_BY_OTHER, SchedulerStore, go_duration, option_strings
from asynq_aio.scheduler import CronEntry, EntryOptions, Fire, Scheduler, claim_ttl
from asynq_aio.transport import Op, Transport

GO_ZERO_TIME = -62135596800  # Go's time.Time{} as a protobuf Timestamp: "never" for prev_enqueue_time


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


async def pending_ids(raw: RawRedis, queue: str) -> list[str]:
    return [x.decode() for x in await raw.cmd("LRANGE", queue_keys(queue).pending, 0, -1)]


async def tasks_of_type(raw: RawRedis, queue: str, task_type: str) -> list[str]:
    out = []
    for tid in await pending_ids(raw, queue):
        msg = decode_task_message(await raw.cmd("HGET", queue_keys(queue).task(tid), "msg"))
        if msg.type == task_type:
            out.append(tid)
    return out


async def history(raw: RawRedis, entry_id: str) -> list[tuple[SchedulerEnqueueEvent, float]]:
    flat = await raw.cmd("ZRANGE", scheduler_history_key(entry_id), 0, -1, "WITHSCORES")
    if flat and isinstance(flat[0], list | tuple):  # RESP3-style pairs
        pairs = [(bytes(m), float(s)) for m, s in flat]
    else:
        pairs = [(bytes(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]
    out = []
    for member, score in pairs:
        ev = SchedulerEnqueueEvent()
        ev.ParseFromString(member)
        out.append((ev, score))
    return out


async def heartbeat_entries(raw: RawRedis, scheduler_id: str) -> list[SchedulerEntry]:
    out = []
    for item in await raw.cmd("LRANGE", scheduler_entries_key(scheduler_id), 0, -1):
        e = SchedulerEntry()
        e.ParseFromString(bytes(item))
        out.append(e)
    return out


def fire_unix(task_id: str) -> int:
    return int(task_id.rsplit(":", 1)[1])


# -- without Redis ------------------------------------------------------------------------------------


def test_entry_ids_are_derived_from_the_definition() -> None:
    a = Scheduler(RedisClientOpt(addr="127.0.0.1:1"))
    b = Scheduler(RedisClientOpt(addr="127.0.0.1:1"))
    ia = a.register("*/5 * * * *", Task("t", {"x": 1}), queue="q", max_retry=3, timeout=timedelta(seconds=30))
    ib = b.register("*/5  *  * * *", Task("t", {"x": 1}), queue="q", max_retry=3, timeout=30)
    assert ia == ib  # another process, same definition: same ID (the dedup relies on it)
    assert str(uuid.UUID(ia)) == ia
    assert a.register("*/5 * * * *", Task("t", {"x": 1}), queue="q", max_retry=3, timeout=30) == ia
    assert len(a.entries()) == 1  # registering the same entry again is a no-op
    variants = {
        ia,
        a.register("*/5 * * * *", Task("t", {"x": 2}), queue="q", max_retry=3, timeout=30),
        a.register("*/5 * * * *", Task("u", {"x": 1}), queue="q", max_retry=3, timeout=30),
        a.register("*/5 * * * *", Task("t", {"x": 1}), queue="r", max_retry=3, timeout=30),
        a.register("*/6 * * * *", Task("t", {"x": 1}), queue="q", max_retry=3, timeout=30),
        a.register(
            "*/5 * * * *", Task("t", {"x": 1}, headers={"h": "1"}), queue="q", max_retry=3, timeout=30
        ),
        a.register("*/5 * * * *", Task("t", {"x": 1}), queue="q", max_retry=4, timeout=30),
        Scheduler(RedisClientOpt(), location=ZoneInfo("Europe/Berlin")).register(
            "*/5 * * * *", Task("t", {"x": 1}), queue="q", max_retry=3, timeout=30
        ),
    }
    assert len(variants) == 8
    a.unregister(ia)
    assert ia not in {e.id for e in a.entries()}
    with pytest.raises(KeyError, match="no scheduler entry"):
        a.unregister(ia)


def test_register_rejects_bad_specs_and_options_up_front() -> None:
    s = Scheduler(RedisClientOpt())
    with pytest.raises(ValueError, match="invalid cron spec '61 \\* \\* \\* \\*'"):
        s.register("61 * * * *", Task("t"))
    with pytest.raises(InvalidQueueName):
        s.register("@every 1s", Task("t"), queue="{bad}")
    with pytest.raises(InvalidTaskError):
        s.register("@every 1s", Task("t"), max_retry=-1)
    with pytest.raises(InvalidTaskError):
        s.register("@every 1s", Task("t"), unique=0.5)
    with pytest.raises(TypeError):
        s.register("@every 1s", "not a task")  # type: ignore[arg-type]
    assert s.entries() == []


def test_go_option_strings() -> None:
    assert [go_duration(x) for x in (0, 1, 30, 90, 3600, 1.5, 0.25, 86400 * 2 + 61)] == [
        "0s",
        "1s",
        "30s",
        "1m30s",
        "1h0m0s",
        "1.5s",
        "250ms",
        "48h1m1s",
    ]
    deadline = datetime(2025, 1, 2, 3, 4, 5, tzinfo=ZoneInfo("Europe/Berlin"))
    assert option_strings(
        queue="q",
        max_retry=3,
        timeout=timedelta(minutes=30),
        deadline=deadline,
        unique=3600,
        process_in=90,
        retention=timedelta(days=1),
        group='g"1',
    ) == [
        'Queue("q")',
        "MaxRetry(3)",
        "Timeout(30m0s)",
        "Deadline(Thu Jan  2 03:04:05 CET 2025)",
        "Unique(1h0m0s)",
        "ProcessIn(1m30s)",
        "Retention(24h0m0s)",
        'Group("g\\"1")',
    ]


def test_claim_ttl_scales_with_the_period() -> None:
    t = Task("t")
    assert claim_ttl(CronEntry.build("@every 1s", t), 1_700_000_000) == 60  # short periods: a minute
    assert claim_ttl(CronEntry.build("*/5 * * * *", t), 1_700_000_100) == 3000
    assert claim_ttl(CronEntry.build("@daily", t), 1_699_920_000) == 86400  # capped at a day


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


# -- against Redis ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fire_claim_lease_and_atomic_settle(
    opt: RedisConnOpt, raw: RawRedis, unique_queue: str
) -> None:
    q = unique_queue
    transport = Transport.connect(opt)
    client = Client(opt)
    try:
        store = SchedulerStore(transport)
        key = fire_claim_key(q, "e1", 100)
        assert transport.keyslot(key) == transport.keyslot(queue_keys(q).pending)

        # the lease: exclusive, re-sendable by its holder, and it tells others how long to wait
        assert (await store.claim_fire(q, "e1", 100, "A", 5)).won
        assert (await store.claim_fire(q, "e1", 100, "A", 5)).won  # a re-sent claim is still ours
        other = await store.claim_fire(q, "e1", 100, "B", 5)
        assert not other.won and not other.settled and 4 < other.retry_in <= 5
        assert await store.fire_claim(q, "e1", 100) == "L A"
        assert (await store.claim_fire(q, "e1", 101, "B", 5)).won  # another fire is independent

        def op(task_id: str, **kw: Any) -> Op:
            req, _ = client._request(
                Task("t:fire", b"p"), task_id=task_id, queue=q, max_retry=None, timeout=None,
                deadline=None, process_at=None, process_in=None, unique=kw.get("unique"),
                retention=None, group=None,
            )  # fmt: skip
            return client.broker._enqueue_op(req)

        # the holder stores the task and settles the fire in one step; a re-send gets the same answer
        assert await store.enqueue_fire(op("e1:100"), q, "e1", 100, "A", 60) == 1
        assert await store.enqueue_fire(op("e1:100"), q, "e1", 100, "A", 60) == 1
        assert await store.fire_claim(q, "e1", 100) == "D A 1"
        assert 0 < int(await transport.call("TTL", key)) <= 60
        # anyone else (a scheduler that took over an expired lease) finds it settled: nothing stored
        assert await store.enqueue_fire(op("e1:100"), q, "e1", 100, "B", 60) == SETTLED_BY_OTHER
        assert (await store.claim_fire(q, "e1", 100, "B", 5)).settled
        assert await pending_ids(raw, q) == ["e1:100"]

        # a unique entry whose lock is held: the fire is settled as a duplicate, nothing is written
        assert await store.enqueue_fire(op("u:1", unique=60), q, "u", 1, "A", 60) == 1
        assert await store.enqueue_fire(op("u:2", unique=60), q, "u", 2, "A", 60) == -2
        assert await store.enqueue_fire(op("u:2", unique=60), q, "u", 2, "A", 60) == -2  # re-sent
        assert await store.enqueue_fire(op("u:2", unique=60), q, "u", 2, "B", 60) == SETTLED_BY_OTHER
        assert int(await raw.cmd("EXISTS", queue_keys(q).task("u:2"))) == 0
        # a fire whose task ID is taken (not by a scheduler): a conflict, settled so no one retries
        assert await store.enqueue_fire(op("e1:100"), q, "e1", 999, "A", 60) == -1
        with pytest.raises(ValueError, match="expected an enqueue op"):
            await store.enqueue_fire(Op.command("PING"), q, "e1", 5, "A", 60)
    finally:
        await client.aclose()
        await transport.aclose()


@pytest.mark.anyio
async def test_every_second_entry_enqueues_with_its_options_and_calls_hooks(
    opt: RedisConnOpt, raw: RawRedis, unique_queue: str
) -> None:
    q = unique_queue
    pre_calls: list[Fire] = []
    post_calls: list[tuple[Fire, TaskInfo | Exception]] = []

    async def pre(fire: Fire) -> None:
        pre_calls.append(fire)

    def post(fire: Fire, result: TaskInfo | Exception) -> None:
        post_calls.append((fire, result))

    sched = Scheduler(opt, pre_enqueue=pre, post_enqueue=post)
    ping = sched.register(
        "@every 1s", Task("cron:ping", {"n": 1}), queue=q, max_retry=3, timeout=30, retention=60
    )
    once = sched.register("@every 1s", Task("cron:once", b"x"), queue=q, unique=3600)

    def infos(entry_id: str) -> list[TaskInfo]:
        return [r for f, r in post_calls if f.entry.id == entry_id and isinstance(r, TaskInfo)]

    def errors(entry_id: str) -> list[Exception]:
        return [r for f, r in post_calls if f.entry.id == entry_id and isinstance(r, Exception)]

    async def enough() -> bool:
        return len(infos(ping)) >= 2 and len(errors(once)) >= 1

    async with sched.serve():
        await wait_until(enough, 8, what="two ping fires and a duplicate once-fire")

    # the ping entry: one task per fire, stored with the entry's options and a fire-derived ID
    ping_infos = infos(ping)
    assert errors(ping) == []
    stored = await tasks_of_type(raw, q, "cron:ping")
    assert sorted(stored) == sorted(i.id for i in ping_infos)
    for info in ping_infos:
        assert info.queue == q and info.max_retry == 3
        msg = decode_task_message(await raw.cmd("HGET", queue_keys(q).task(info.id), "msg"))
        assert (msg.type, msg.payload, msg.queue) == ("cron:ping", b'{"n":1}', q)
        assert (msg.retry, msg.timeout, msg.retention) == (3, 30, 60)
    fired_at = sorted(fire_unix(i.id) for i in ping_infos)
    assert fired_at == list(range(fired_at[0], fired_at[0] + len(fired_at)))  # every second, none missed
    for fire, result in post_calls:
        if isinstance(result, TaskInfo):
            assert result.id == fire.task_id == f"{fire.entry.id}:{int(fire.at.timestamp())}"

    # the unique entry: the first fire enqueued, later ones reached post_enqueue as the error
    assert len(await tasks_of_type(raw, q, "cron:once")) == 1
    assert all(isinstance(e, DuplicateTaskError) for e in errors(once))

    # pre_enqueue ran once per attempted enqueue, before post_enqueue saw its outcome
    assert sorted(f.task_id for f in pre_calls) == sorted(f.task_id for f, _ in post_calls)

    # history: one SchedulerEnqueueEvent per enqueued task, scored by its enqueue time (unix s)
    events = await history(raw, ping)
    assert sorted(ev.task_id for ev, _ in events) == sorted(i.id for i in ping_infos)
    for ev, score in events:
        assert score == ev.enqueue_time.seconds
        assert abs(ev.enqueue_time.seconds - fire_unix(ev.task_id)) <= 2
    assert [ev.task_id for ev, _ in await history(raw, once)] == [i.id for i in infos(once)]
    for eid in (ping, once):
        await raw.cmd("DEL", scheduler_history_key(eid))


@pytest.mark.anyio
async def test_two_schedulers_enqueue_each_fire_exactly_once(
    opt: RedisConnOpt, raw: RawRedis, unique_queue: str
) -> None:
    q = unique_queue
    results: list[tuple[Fire, TaskInfo | Exception]] = []

    def post(fire: Fire, result: TaskInfo | Exception) -> None:
        results.append((fire, result))

    a = Scheduler(opt, post_enqueue=post)
    b = Scheduler(opt, post_enqueue=post)
    task = Task("cron:dedup", {"k": "v"})
    eid = a.register("@every 1s", task, queue=q, max_retry=2)
    assert b.register("@every 1s", Task("cron:dedup", {"k": "v"}), queue=q, max_retry=2) == eid

    async with a.serve(), b.serve():
        # two schedulers that are not running touched upcoming fires: "ghost-done" settled one
        # (its task may be processed and deleted already), so neither a nor b may enqueue it again;
        # "ghost-dead" leased one and died, so a or b must take that fire over when the lease ends
        settled = int(time.time()) + 2
        abandoned = settled + 1
        await raw.cmd("SET", fire_claim_key(q, eid, settled), "D ghost-done 1", "EX", 60)
        await raw.cmd("SET", fire_claim_key(q, eid, abandoned), "L ghost-dead", "PX", 1500)

        async def past_ghosts() -> bool:
            fires = [fire_unix(i) for i in await pending_ids(raw, q)]
            return len(fires) >= 3 and abandoned in fires and max(fires) > abandoned

        await wait_until(past_ghosts, 10, what="three fires, the abandoned one taken over")

    ids = await pending_ids(raw, q)
    fired = sorted(fire_unix(i) for i in ids)
    assert len(fired) == len(set(fired)), f"a fire was enqueued twice: {fired}"
    assert settled not in fired
    assert set(fired) == set(range(fired[0], fired[-1] + 1)) - {settled}, "a fire was lost"
    for t in fired:  # each fire was stored by exactly one of the two running schedulers
        claim = (await raw.cmd("GET", fire_claim_key(q, eid, t))).decode()
        assert claim in {f"D {a.id} 1", f"D {b.id} 1"}
    assert all(isinstance(r, TaskInfo) for _, r in results)  # losers skip quietly
    assert sorted(r.id for _, r in results if isinstance(r, TaskInfo)) == sorted(ids)
    assert sorted(ev.task_id for ev, _ in await history(raw, eid)) == sorted(ids)
    await raw.cmd("DEL", scheduler_history_key(eid))


@pytest.mark.anyio
async def test_heartbeat_publishes_entries_in_asynq_format(
    opt: RedisConnOpt, raw: RawRedis, unique_queue: str
) -> None:
    q = unique_queue
    berlin = ZoneInfo("Europe/Berlin")
    # a long interval: changes must still reach Redis at once, not at the next periodic beat
    sched = Scheduler(opt, location=berlin, heartbeat_interval=30)
    yearly = sched.register(
        "0 0 1 1 *", Task("report:yearly", b"payload"), queue=q, max_retry=3, timeout=30, unique=3600
    )
    key = scheduler_entries_key(sched.id)

    async def listed() -> set[str]:
        return {e.id for e in await heartbeat_entries(raw, sched.id)}

    async with sched.serve():
        with pytest.raises(RuntimeError, match="already running"):
            async with sched.serve():
                pass  # pragma: no cover

        async def has_yearly() -> bool:
            return yearly in await listed()

        await wait_until(has_yearly, 5, what="first heartbeat")
        now = time.time()
        score = float(await raw.cmd("ZSCORE", ALL_SCHEDULERS, key))
        assert now < score <= now + 3 * 30 + 1  # expiry = now + TTL, as Go writes it
        assert 0 < int(await raw.cmd("TTL", key)) <= 90
        (entry,) = await heartbeat_entries(raw, sched.id)
        assert entry.id == yearly and entry.spec == "0 0 1 1 *"
        assert (entry.task_type, entry.task_payload) == ("report:yearly", b"payload")
        assert list(entry.enqueue_options) == [
            f'Queue("{q}")',
            "MaxRetry(3)",
            "Timeout(30s)",
            "Unique(1h0m0s)",
        ]
        next_jan_1 = datetime(datetime.now(berlin).year + 1, 1, 1, tzinfo=berlin)
        assert entry.next_enqueue_time.ToDatetime(tzinfo=UTC) == next_jan_1.astimezone(UTC)
        assert entry.prev_enqueue_time.seconds == GO_ZERO_TIME  # Go's zero time: "N/A" in cron ls

        # the store's reader (what an inspector / `cron ls` does) sees the same entries
        transport = Transport.connect(opt)
        try:
            listing = await SchedulerStore(transport).list_entries()
        finally:
            await transport.aclose()
        assert [e.id for e in listing[sched.id]] == [yearly]
        assert listing[sched.id][0].enqueue_options[0] == f'Queue("{q}")'

        daily = sched.register("@daily", Task("report:daily"), queue=q)

        async def both() -> bool:
            return await listed() == {yearly, daily}

        await wait_until(both, 3, what="the new entry in the heartbeat")
        sched.unregister(yearly)

        async def only_daily() -> bool:
            return await listed() == {daily}

        await wait_until(only_daily, 3, what="the removed entry gone from the heartbeat")

    # a clean stop withdraws the scheduler, as Go's does
    assert await raw.cmd("ZSCORE", ALL_SCHEDULERS, key) is None
    assert int(await raw.cmd("EXISTS", key)) == 0


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
