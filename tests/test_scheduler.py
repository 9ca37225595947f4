"""Scheduler and PeriodicTaskManager against real Redis (single and cluster): fires, options, hooks,
once-per-fire across schedulers, heartbeats and history in Asynq's format."""

from __future__ import annotations

import logging
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from conftest import RedisTarget
from test_cli_admin import Cli, rows
from workerproc import RawRedis, wait_until

from asynq_aio import (
    Client,
    DuplicateTaskError,
    InvalidQueueName,
    InvalidTaskError,
    RedisClientOpt,
    Task,
    TaskInfo,
)
from asynq_aio._connection import RedisConnOpt
from asynq_aio._inspection import SchedulerEntryInfo
from asynq_aio._inspector import Inspector
from asynq_aio._options import EnqueueOptions, prepare
from asynq_aio._scheduler import CronEntry, Fire, Scheduler, claim_ttl
from asynq_aio.protocol._redis.ops import Op
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.asynq_pb2 import SchedulerEnqueueEvent, SchedulerEntry
from asynq_aio.protocol.codec import decode_task_message
from asynq_aio.protocol.keys import (
    ALL_QUEUES,
    ALL_SCHEDULERS,
    fire_claim_key,
    queue_keys,
    scheduler_entries_key,
    scheduler_history_key,
)
from asynq_aio.protocol.scheduler_store import SETTLED_BY_OTHER, SchedulerStore, go_duration, option_strings

GO_ZERO_TIME = -62135596800  # Go's time.Time{} as a protobuf Timestamp: "never" for prev_enqueue_time


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
            options = EnqueueOptions(task_id=task_id, queue=q, unique=kw.get("unique"))
            req, _ = prepare(Task("t:fire", b"p"), options, now=time.time())
            return client._broker.enqueue_op(req)

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
async def test_a_claimer_that_stalls_after_claiming_is_taken_over_without_a_duplicate(
    opt: RedisConnOpt, raw: RawRedis, unique_queue: str
) -> None:
    """A claims a fire and then hangs (the hook stands in for a GC pause, a frozen VM, a crash):
    B takes the fire over when A's lease ends, and A, once it resumes, stores nothing."""
    q = unique_queue
    release = anyio.Event()
    stalled: list[Fire] = []
    a_posts: list[tuple[Fire, TaskInfo | Exception]] = []
    b_posts: list[tuple[Fire, TaskInfo | Exception]] = []

    async def a_pre(fire: Fire) -> None:
        if not stalled:
            stalled.append(fire)
            await release.wait()

    # B's clock runs 0.3 s behind, so A claims every fire first (a deterministic race)
    a = Scheduler(opt, claim_lease=1, pre_enqueue=a_pre, post_enqueue=lambda f, r: a_posts.append((f, r)))
    b = Scheduler(
        opt, claim_lease=1, clock=lambda: time.time() - 0.3, post_enqueue=lambda f, r: b_posts.append((f, r))
    )
    task = Task("cron:stall", b"")
    eid = a.register("@every 1s", task, queue=q)
    assert b.register("@every 1s", task, queue=q) == eid

    async with a.serve(), b.serve():

        async def taken_over() -> bool:
            return bool(stalled) and stalled[0].task_id in await pending_ids(raw, q)

        await wait_until(taken_over, 8, what="B enqueueing the fire A stalled on")
        victim = stalled[0]
        assert (
            await raw.cmd("GET", fire_claim_key(q, eid, fire_unix(victim.task_id)))
        ).decode() == f"D {b.id} 1"
        release.set()  # A resumes: its enqueue finds the fire settled by B and stores nothing

        async def a_went_on() -> bool:
            return any(f.at > victim.at for f, _ in a_posts)

        await wait_until(a_went_on, 5, what="A enqueueing later fires")

    assert [f.task_id for f, _ in b_posts if f.task_id == victim.task_id] == [victim.task_id]
    assert victim.task_id not in [f.task_id for f, _ in a_posts]  # settled by B: A reports nothing
    fired = sorted(fire_unix(i) for i in await pending_ids(raw, q))
    assert fired == list(range(fired[0], fired[0] + len(fired))), f"duplicate or lost fire: {fired}"
    assert all(isinstance(r, TaskInfo) for _, r in a_posts + b_posts)
    await raw.cmd("DEL", scheduler_history_key(eid))


_KILLED_SCHEDULER = """
import os, signal, sys
import anyio
from asynq_aio import RedisClusterClientOpt, Task, parse_redis_url
from asynq_aio._scheduler import Scheduler

kind, where, queue = sys.argv[1:4]
opt = parse_redis_url(where) if kind == "single" else RedisClusterClientOpt(addrs=where.split(","))

def die(fire):  # between the claim and the enqueue: the worst moment to crash
    print(fire.task_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

async def main():
    s = Scheduler(opt, claim_lease=1, pre_enqueue=die)
    s.register("@every 1s", Task("cron:killed", b""), queue=queue)
    async with s.serve():
        await anyio.sleep(30)

anyio.run(main)
"""


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_scheduler_killed_between_claim_and_enqueue_loses_no_fire(
    redis_target: RedisTarget, opt: RedisConnOpt, raw: RawRedis, unique_queue: str
) -> None:
    q = unique_queue
    where = redis_target.url if redis_target.kind == "single" else ",".join(redis_target.addrs or [])
    assert where is not None
    results: list[tuple[Fire, TaskInfo | Exception]] = []
    # this scheduler's clock runs 0.5 s behind, so the process claims every fire first and dies
    sched = Scheduler(opt, clock=lambda: time.time() - 0.5, post_enqueue=lambda f, r: results.append((f, r)))
    eid = sched.register("@every 1s", Task("cron:killed", b""), queue=q)
    async with sched.serve():
        proc = await anyio.open_process(
            [sys.executable, "-c", _KILLED_SCHEDULER, redis_target.kind, where, q]
        )
        try:
            with anyio.fail_after(20):
                await proc.wait()
            assert proc.stdout is not None
            out = (await proc.stdout.receive()).decode().split()
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.aclose()
        assert proc.returncode == -signal.SIGKILL
        (claimed,) = out  # the fire the killed process had leased

        async def taken_over() -> bool:
            return claimed in await pending_ids(raw, q)

        await wait_until(taken_over, 5, what="the killed scheduler's fire enqueued by the survivor")
    assert (await raw.cmd("GET", fire_claim_key(q, eid, fire_unix(claimed)))).decode() == f"D {sched.id} 1"
    fired = sorted(fire_unix(i) for i in await pending_ids(raw, q))
    assert fired == list(range(fired[0], fired[0] + len(fired))), f"duplicate or lost fire: {fired}"
    assert sorted(r.id for _, r in results if isinstance(r, TaskInfo)) == sorted(await pending_ids(raw, q))
    await raw.cmd("DEL", scheduler_history_key(eid))


@pytest.mark.anyio
async def test_running_scheduler_shows_in_inspector_and_cron_cli(
    redis_target: RedisTarget, opt: RedisConnOpt, raw: RawRedis, unique_queue: str
) -> None:
    q = unique_queue
    fired: list[TaskInfo] = []

    def post(fire: Fire, result: TaskInfo | Exception) -> None:
        if isinstance(result, TaskInfo):
            fired.append(result)

    sched = Scheduler(opt, location="America/New_York", post_enqueue=post, heartbeat_interval=0.5)
    daily = sched.register("30 9 * * MON-FRI", Task("report:daily", {"q": q}), queue=q, max_retry=2)
    ping = sched.register("@every 1s", Task("cron:ping", b"p"), queue=q, timeout=90)
    cli = Cli(redis_target)
    async with sched.serve(), Inspector(opt) as insp:

        async def one_fire() -> bool:
            return bool(fired)

        await wait_until(one_fire, 5, what="a fire of the @every entry")

        async def listed() -> dict[str, SchedulerEntryInfo]:
            return {e.id: e for e in await insp.scheduler_entries() if e.id in (daily, ping)}

        async def both_listed_after_fire() -> bool:
            got = await listed()
            return len(got) == 2 and got[ping].prev_enqueue_at is not None

        await wait_until(both_listed_after_fire, 5, what="the entries in the Inspector")
        got = await listed()
        d = got[daily]
        assert (d.spec, d.task_type, d.options) == (
            "30 9 * * MON-FRI",
            "report:daily",
            [f'Queue("{q}")', "MaxRetry(2)"],
        )
        assert d.prev_enqueue_at is None
        assert d.next_enqueue_at is not None
        local = d.next_enqueue_at.astimezone(ZoneInfo("America/New_York"))
        assert (local.hour, local.minute) == (9, 30) and local.weekday() < 5
        assert got[ping].options == [f'Queue("{q}")', "Timeout(1m30s)"]

        table = rows((await cli("cron", "ls")).output)
        assert table[0] == ["EntryID", "Spec", "Type", "Payload", "Options", "Next Enqueue", "Prev Enqueue"]
        (row,) = [r for r in table if r[0] == daily]
        assert row[1:5] == [
            "30 9 * * MON-FRI",
            "report:daily",
            f'{{"q":"{q}"}}',
            f'Queue("{q}"), MaxRetry(2)',
        ]
        assert row[5].startswith("in ") and row[6] == "N/A"
        (row,) = [r for r in table if r[0] == ping]
        assert row[1:5] == ["@every 1s", "cron:ping", "p", f'Queue("{q}"), Timeout(1m30s)']
        assert row[6].endswith(" ago")

        events = (await cli.json("cron", "history", ping))[ping]
        assert fired[0].id in [e["task_id"] for e in events]
    await raw.cmd("DEL", scheduler_history_key(ping))


def test_scheduler_arguments_fail_clearly() -> None:
    assert Scheduler(RedisClientOpt(), location="Europe/Berlin").location == ZoneInfo("Europe/Berlin")
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Scheduler(RedisClientOpt(), location="Mars/Olympus")
    with pytest.raises(TypeError, match="location must be"):
        Scheduler(RedisClientOpt(), location=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="heartbeat_interval"):
        Scheduler(RedisClientOpt(), heartbeat_interval=0)
    with pytest.raises(ValueError, match="claim_lease"):
        Scheduler(RedisClientOpt(), claim_lease=-1)
    with pytest.raises(ValueError, match="unknown time zone 'Nowhere/City'"):
        Scheduler(RedisClientOpt()).register("CRON_TZ=Nowhere/City 0 9 * * *", Task("t"))


@pytest.mark.anyio
async def test_a_raising_pre_enqueue_hook_does_not_stop_the_fire(
    opt: RedisConnOpt, raw: RawRedis, unique_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    q = unique_queue

    def pre(fire: Fire) -> None:
        raise RuntimeError("metrics backend down")

    sched = Scheduler(opt, pre_enqueue=pre)
    eid = sched.register("@every 1s", Task("cron:hooked", b""), queue=q)
    with caplog.at_level(logging.ERROR, logger="asynq_aio.scheduler"):
        async with sched.serve():

            async def stored() -> bool:
                return bool(await pending_ids(raw, q))

            await wait_until(stored, 5, what="the fire enqueued despite the hook")
    assert "pre_enqueue hook raised" in caplog.text
    await raw.cmd("DEL", scheduler_history_key(eid))


@pytest.mark.anyio
async def test_a_failed_queue_listing_does_not_stop_the_fire(
    opt: RedisConnOpt, raw: RawRedis, unique_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The scheduler lists a fire's queue in asynq:queues beside the write, as the client does: when
    the listing fails (asynq:queues is not a set here, so SADD answers WRONGTYPE), the fire is still
    enqueued and the failure logged; once the set is fixed, a later fire lists the queue."""
    q = unique_queue
    members = await raw.cmd("SMEMBERS", ALL_QUEUES)
    await raw.cmd("DEL", ALL_QUEUES)
    await raw.cmd("SET", ALL_QUEUES, "not a set")
    sched = Scheduler(opt)
    eid = sched.register("@every 1s", Task("cron:listed", b""), queue=q)
    try:
        with caplog.at_level(logging.WARNING, logger="asynq_aio.scheduler"):
            async with sched.serve():

                async def stored() -> bool:
                    return bool(await pending_ids(raw, q))

                await wait_until(stored, 5, what="the fire enqueued while its listing fails")
                assert f"could not add queue(s) {q} to asynq:queues" in caplog.text
                await raw.cmd("DEL", ALL_QUEUES)
                if members:
                    await raw.cmd("SADD", ALL_QUEUES, *members)
                    members = []

                async def listed() -> bool:
                    return bool(await raw.cmd("SISMEMBER", ALL_QUEUES, q))

                await wait_until(listed, 5, what="a later fire lists the queue")
    finally:
        if await raw.cmd("TYPE", ALL_QUEUES) == b"string":
            await raw.cmd("DEL", ALL_QUEUES)
        if members:
            await raw.cmd("SADD", ALL_QUEUES, *members)
        await raw.cmd("DEL", scheduler_history_key(eid))
