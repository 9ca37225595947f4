"""The Inspector against real Redis (single and cluster), with tasks in every state."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from conftest import RedisTarget
from google.protobuf.timestamp_pb2 import Timestamp
from workerproc import RawRedis, conn_opt, wait_until

from asynq_aio import (
    Client,
    Config,
    QueueNotFoundError,
    ServeMux,
    Server,
    Task,
    TaskNotFoundError,
    TaskState,
)
from asynq_aio._errors import FailedPreconditionError
from asynq_aio._inspector import Inspector
from asynq_aio.protocol import admin
from asynq_aio.protocol._redis.ops import EncodableArg, LuaScript
from asynq_aio.protocol.asynq_pb2 import SchedulerEnqueueEvent, SchedulerEntry
from asynq_aio.protocol.codec import decode_task_message
from asynq_aio.protocol.keys import ALL_QUEUES, queue_keys

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Populated:
    """IDs of a queue with tasks in every state (lists in listing order)."""

    queue: str
    pending: list[str]  # dequeue order
    active: str
    scheduled: list[str]  # soonest first
    retry: str
    archived: str
    completed: str
    group: str
    aggregating: list[str]
    retry_at: float


async def populate(client: Client, queue: str) -> Populated:
    """Tasks in every state, written by the Client and the broker's own outcome scripts."""
    b = client._broker
    for tid, max_retry, retention in (
        ("active-1", None, None),
        ("retry-1", 5, None),
        ("archived-1", None, None),
        ("completed-1", None, 600),
    ):
        task = Task(f"t:{tid[:-2]}", {"id": tid})
        await client.enqueue(task, queue=queue, task_id=tid, max_retry=max_retry, retention=retention)
    got = await b.dequeue(queue, 4, time.time() + 60)
    assert isinstance(got, list) and len(got) == 4
    msgs = {d.task_id: decode_task_message(d.raw) for d in got}
    await b.write_result(queue, "completed-1", b"the result")
    retry_at = time.time() + 3600
    replies = await b.run(
        [
            b.fail_op(msgs["retry-1"], error="boom", archive=False, retry_at=retry_at),
            b.fail_op(msgs["archived-1"], error="dead", archive=True),
            b.ack_op(msgs["completed-1"]),
        ]
    )
    assert replies == [1, 1, 1]
    pending = [f"pending-{i}" for i in range(3)]
    for tid in pending:
        await client.enqueue(Task("t:pending", {"id": tid}), queue=queue, task_id=tid)
    await client.enqueue(Task("t:scheduled", b"late"), queue=queue, task_id="sched-late", process_in=7200)
    await client.enqueue(Task("t:scheduled", b"soon"), queue=queue, task_id="sched-soon", process_in=3600)
    agg = ["agg-0", "agg-1"]
    for tid in agg:
        await client.enqueue(Task("t:agg", {"id": tid}), queue=queue, task_id=tid, group="grp")
    return Populated(
        queue, pending, "active-1", ["sched-soon", "sched-late"], "retry-1", "archived-1", "completed-1",
        "grp", agg, retry_at,
    )  # fmt: skip


@pytest.fixture
async def insp(redis_target: RedisTarget) -> AsyncIterator[Inspector]:
    async with Inspector(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)) as i:
        yield i


@pytest.fixture
async def pop(client: Client, unique_queue: str) -> Populated:
    return await populate(client, unique_queue)


def qk(queue: str) -> Any:
    return queue_keys(queue)


async def queue_key_names(raw: RawRedis, queue: str) -> list[str]:
    """Every key of the queue, found by SCAN on every node (independent of the code under test)."""
    pattern = f"asynq:{{{queue}}}:*"
    client: Any = raw._client
    return sorted([k.decode() async for k in client.scan_iter(match=pattern)])


# -- queues ---------------------------------------------------------------------------------------


async def test_queue_info_counts_every_state(insp: Inspector, pop: Populated, raw: RawRedis) -> None:
    info = await insp.get_queue_info(pop.queue)
    assert (info.pending, info.active, info.scheduled, info.retry) == (3, 1, 2, 1)
    assert (info.archived, info.completed, info.aggregating) == (1, 1, 2)
    assert info.size == 11
    assert info.groups == 1
    assert (info.processed, info.failed, info.processed_total, info.failed_total) == (3, 2, 3, 2)
    assert info.paused is False
    assert timedelta(0) <= info.latency < timedelta(seconds=10)
    assert info.memory_usage is not None and info.memory_usage > 11 * 50
    assert pop.queue in await insp.queues()

    # latency is the age of the oldest pending task, from its pending_since (ns)
    oldest = qk(pop.queue).task(pop.pending[0])
    await raw.cmd("HSET", oldest, "pending_since", int((time.time() - 120) * 1e9))
    info = await insp.get_queue_info(pop.queue, memory=False)
    assert timedelta(seconds=119) <= info.latency < timedelta(seconds=130)
    assert info.memory_usage is None

    assert await insp.pause_queue(pop.queue) is True
    assert await insp.pause_queue(pop.queue) is False
    assert (await insp.get_queue_info(pop.queue)).paused is True
    assert await insp.unpause_queue(pop.queue) is True
    assert (await insp.get_queue_info(pop.queue)).paused is False

    with pytest.raises(QueueNotFoundError, match='queue "no_such_queue" not found'):
        await insp.get_queue_info("no_such_queue")
    with pytest.raises(QueueNotFoundError):
        await insp.pause_queue("no_such_queue")


async def test_queue_infos_of_many_queues(insp: Inspector, client: Client, unique_queue: str) -> None:
    a, b = unique_queue + "_a", unique_queue + "_b"
    await client.enqueue(Task("x"), queue=a)
    await client.enqueue_many([Task("x"), Task("y")], queue=b)
    infos = {i.queue: i for i in await insp.get_queue_infos()}
    assert infos[a].pending == 1 and infos[b].pending == 2
    assert infos[a].memory_usage is None


async def test_history_reads_daily_counters(insp: Inspector, pop: Populated, raw: RawRedis) -> None:
    today = datetime.now(tz=UTC)
    yesterday = today - timedelta(days=1)
    await raw.cmd("SET", qk(pop.queue).processed_on(yesterday), 7)
    await raw.cmd("SET", qk(pop.queue).failed_on(yesterday), 4)
    days = await insp.history(pop.queue, 3)
    assert [d.date for d in days] == [(today - timedelta(days=i)).date() for i in range(3)]
    assert [(d.processed, d.failed) for d in days] == [(3, 2), (7, 4), (0, 0)]
    with pytest.raises(ValueError):
        await insp.history(pop.queue, 0)


async def test_groups_with_sizes(insp: Inspector, pop: Populated, client: Client) -> None:
    await client.enqueue(Task("t:agg"), queue=pop.queue, group="other")
    groups = await insp.groups(pop.queue)
    assert [(g.group, g.size) for g in groups] == [("grp", 2), ("other", 1)]


# -- task info and listings -----------------------------------------------------------------------


async def test_task_info_in_every_state(insp: Inspector, pop: Populated, raw: RawRedis) -> None:
    now = datetime.now(tz=UTC)
    t = await insp.get_task_info(pop.queue, pop.pending[0])
    assert t.state is TaskState.PENDING and t.type == "t:pending"
    assert t.next_process_at is not None and abs(t.next_process_at - now) < timedelta(seconds=5)

    t = await insp.get_task_info(pop.queue, pop.retry)
    assert t.state is TaskState.RETRY
    assert (t.retried, t.max_retry, t.last_err) == (1, 5, "boom")
    assert t.next_process_at == datetime.fromtimestamp(int(pop.retry_at), tz=UTC)
    assert t.last_failed_at is not None

    t = await insp.get_task_info(pop.queue, pop.scheduled[0])
    assert t.state is TaskState.SCHEDULED and t.payload == b"soon"
    assert t.next_process_at is not None
    assert timedelta(minutes=59) < t.next_process_at - now < timedelta(minutes=61)

    t = await insp.get_task_info(pop.queue, pop.archived)
    assert t.state is TaskState.ARCHIVED and t.last_err == "dead" and t.next_process_at is None

    t = await insp.get_task_info(pop.queue, pop.completed)
    assert t.state is TaskState.COMPLETED and t.result == b"the result"
    assert t.completed_at is not None and t.retention == timedelta(seconds=600)

    t = await insp.get_task_info(pop.queue, pop.aggregating[0])
    assert t.state is TaskState.AGGREGATING and t.group == "grp" and t.next_process_at is None

    # active: orphaned when the lease expired or is missing
    t = await insp.get_task_info(pop.queue, pop.active)
    assert t.state is TaskState.ACTIVE and t.is_orphaned is False
    await raw.cmd("ZADD", qk(pop.queue).lease, int(time.time()) - 5, pop.active)
    assert (await insp.get_task_info(pop.queue, pop.active)).is_orphaned is True
    await raw.cmd("ZREM", qk(pop.queue).lease, pop.active)
    assert (await insp.get_task_info(pop.queue, pop.active)).is_orphaned is True

    with pytest.raises(TaskNotFoundError, match='task "nope" not found in queue'):
        await insp.get_task_info(pop.queue, "nope")
    with pytest.raises(QueueNotFoundError):
        await insp.get_task_info("no_such_queue", "nope")


async def test_list_tasks_of_every_state(insp: Inspector, pop: Populated, raw: RawRedis) -> None:
    q = pop.queue
    assert [t.id for t in await insp.list_pending_tasks(q)] == pop.pending
    active = await insp.list_active_tasks(q)
    assert [(t.id, t.is_orphaned) for t in active] == [(pop.active, False)]
    sched = await insp.list_scheduled_tasks(q)
    assert [t.id for t in sched] == pop.scheduled
    assert all(t.next_process_at is not None for t in sched)
    assert [(t.id, t.last_err) for t in await insp.list_retry_tasks(q)] == [(pop.retry, "boom")]
    assert [(t.id, t.last_err) for t in await insp.list_archived_tasks(q)] == [(pop.archived, "dead")]
    assert [(t.id, t.result) for t in await insp.list_completed_tasks(q)] == [(pop.completed, b"the result")]
    agg = await insp.list_aggregating_tasks(q, "grp")
    assert sorted(t.id for t in agg) == pop.aggregating and {t.group for t in agg} == {"grp"}
    assert await insp.list_aggregating_tasks(q, "nogroup") == []
    with pytest.raises(ValueError):
        await insp.list_tasks(q, TaskState.AGGREGATING)

    # pages (from 1) in dequeue order
    assert [t.id for t in await insp.list_pending_tasks(q, page=1, size=2)] == pop.pending[:2]
    assert [t.id for t in await insp.list_pending_tasks(q, page=2, size=2)] == pop.pending[2:]
    assert await insp.list_pending_tasks(q, page=3, size=2) == []
    assert [t.id for t in await insp.list_tasks(q, "scheduled", page=2, size=1)] == pop.scheduled[1:]
    with pytest.raises(ValueError):
        await insp.list_pending_tasks(q, page=0)

    # an ID whose hash is gone is skipped, not an error
    await raw.cmd("DEL", qk(q).task(pop.pending[1]))
    assert [t.id for t in await insp.list_pending_tasks(q)] == [pop.pending[0], pop.pending[2]]


# -- single-task operations -----------------------------------------------------------------------


async def test_delete_one_task(insp: Inspector, pop: Populated, client: Client, raw: RawRedis) -> None:
    q = qk(pop.queue)
    await insp.delete_task(pop.queue, pop.scheduled[0])
    assert await raw.cmd("EXISTS", q.task(pop.scheduled[0])) == 0
    assert await raw.cmd("ZSCORE", q.scheduled, pop.scheduled[0]) is None
    await insp.delete_task(pop.queue, pop.pending[1])
    assert [x.decode() for x in await raw.cmd("LRANGE", q.pending, 0, -1)] == [pop.pending[2], pop.pending[0]]
    for tid in pop.aggregating:
        await insp.delete_task(pop.queue, tid)
    assert await raw.cmd("SMEMBERS", q.groups) == set()  # the emptied group is unregistered
    await insp.delete_task(pop.queue, pop.completed)
    assert await raw.cmd("ZCARD", q.completed) == 0

    # a unique task's lock is released with it
    info = await client.enqueue(Task("t:uniq", b"u"), queue=pop.queue, unique=3600)
    assert await raw.cmd("GET", info.unique_key) == info.id.encode()
    await insp.delete_task(pop.queue, info.id)
    assert await raw.cmd("EXISTS", info.unique_key) == 0

    with pytest.raises(FailedPreconditionError, match="active"):
        await insp.delete_task(pop.queue, pop.active)
    assert await raw.cmd("EXISTS", q.task(pop.active)) == 1
    with pytest.raises(TaskNotFoundError):
        await insp.delete_task(pop.queue, "nope")


async def test_run_and_archive_one_task(insp: Inspector, pop: Populated, raw: RawRedis) -> None:
    q = qk(pop.queue)
    await insp.run_task(pop.queue, pop.archived)
    h = await raw.cmd("HGETALL", q.task(pop.archived))
    assert h[b"state"] == b"pending" and abs(int(h[b"pending_since"]) / 1e9 - time.time()) < 5
    assert await raw.cmd("ZCARD", q.archived) == 0
    assert (await raw.cmd("LRANGE", q.pending, 0, 0))[0] == pop.archived.encode()  # runs last, like Go

    await insp.run_task(pop.queue, pop.aggregating[0])
    await insp.run_task(pop.queue, pop.aggregating[1])
    assert await raw.cmd("SMEMBERS", q.groups) == set()
    assert (await insp.get_queue_info(pop.queue)).pending == 6

    await insp.archive_task(pop.queue, pop.pending[0])
    t = await insp.get_task_info(pop.queue, pop.pending[0])
    assert t.state is TaskState.ARCHIVED
    assert b"pending_since" not in await raw.cmd("HGETALL", q.task(pop.pending[0]))
    assert pop.pending[0].encode() not in await raw.cmd("LRANGE", q.pending, 0, -1)
    await insp.archive_task(pop.queue, pop.retry)
    assert (await insp.get_task_info(pop.queue, pop.retry)).state is TaskState.ARCHIVED

    with pytest.raises(FailedPreconditionError, match="already archived"):
        await insp.archive_task(pop.queue, pop.retry)
    with pytest.raises(FailedPreconditionError, match="already pending"):
        await insp.run_task(pop.queue, pop.pending[1])
    with pytest.raises(FailedPreconditionError, match="active"):
        await insp.run_task(pop.queue, pop.active)
    with pytest.raises(FailedPreconditionError, match="active"):
        await insp.archive_task(pop.queue, pop.active)
    with pytest.raises(FailedPreconditionError, match="completed"):
        await insp.archive_task(pop.queue, pop.completed)


async def test_admin_scripts_are_safe_to_run_twice(insp: Inspector, pop: Populated, raw: RawRedis) -> None:
    """A re-sent script (lost reply) changes nothing more and is not an error."""
    q = qk(pop.queue)
    transport = insp._admin.transport  # the transport its admin scripts run on
    calls: list[tuple[LuaScript, list[str], list[EncodableArg]]] = []
    real = transport.script

    async def twice(script: LuaScript, keys: Any, args: Any) -> Any:
        calls.append((script, list(keys), list(args)))
        first = await real(script, keys, args)
        await real(script, keys, args)  # the re-send
        return first

    transport.script = twice  # type: ignore[method-assign]
    try:
        await insp.run_task(pop.queue, pop.retry)
        await insp.archive_task(pop.queue, pop.pending[0])
        await insp.delete_task(pop.queue, pop.scheduled[0])
    finally:
        transport.script = real  # type: ignore[method-assign]
    assert [c[0].name for c in calls] == ["admin_run", "admin_archive", "admin_delete"]
    pending = [x.decode() for x in await raw.cmd("LRANGE", q.pending, 0, -1)]
    assert pending.count(pop.retry) == 1
    assert await raw.cmd("ZCARD", q.archived) == 2
    assert pop.pending[0] not in pending
    assert await raw.cmd("EXISTS", q.task(pop.scheduled[0])) == 0


async def test_update_payload_of_scheduled_task(insp: Inspector, pop: Populated) -> None:
    t = await insp.update_task_payload(pop.queue, pop.scheduled[0], {"new": True})
    assert t.payload == b'{"new":true}' and t.state is TaskState.SCHEDULED
    assert (await insp.get_task_info(pop.queue, pop.scheduled[0])).payload == b'{"new":true}'
    with pytest.raises(FailedPreconditionError, match="only a scheduled"):
        await insp.update_task_payload(pop.queue, pop.pending[0], b"x")
    with pytest.raises(TaskNotFoundError):
        await insp.update_task_payload(pop.queue, "nope", b"x")


# -- bulk operations ------------------------------------------------------------------------------


async def test_bulk_operations_work_in_batches(
    insp: Inspector, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    q = qk(unique_queue)
    n = 230
    results = await client.enqueue_many(
        [Task("bulk", {"i": i}) for i in range(n)], queue=unique_queue, process_in=3600
    )
    assert not any(isinstance(r, Exception) for r in results)
    await client.enqueue(Task("bulk:uniq", b"u"), queue=unique_queue, unique=3600, process_in=3600)
    await client.enqueue(Task("t:agg"), queue=unique_queue, group="g")
    # an ID whose hash is gone is dropped; one whose hash says another state is left alone
    await raw.cmd("ZADD", q.scheduled, 1, "ghost")
    odd = await client.enqueue(Task("odd"), queue=unique_queue, process_in=3600)
    await raw.cmd("HSET", q.task(odd.id), "state", "retry")
    await raw.cmd("ZADD", q.scheduled, 2, odd.id)  # first in line: the batches must skip past it

    transport = insp._admin.transport  # the transport its admin scripts run on
    sizes: list[int] = []
    real = transport.script

    async def spy(script: LuaScript, keys: Any, args: Any) -> Any:
        sizes.append(len(keys))
        return await real(script, keys, args)

    transport.script = spy  # type: ignore[method-assign]
    try:
        assert await insp.run_all_tasks(unique_queue, "scheduled") == n + 1
        assert await raw.cmd("ZRANGE", q.scheduled, 0, -1) == [odd.id.encode()]
        assert await raw.cmd("LLEN", q.pending) == n + 1
        assert await insp.archive_all_tasks(unique_queue, "pending") == n + 1
        assert await raw.cmd("LLEN", q.pending) == 0 and await raw.cmd("ZCARD", q.archived) == n + 1
        assert await insp.delete_all_tasks(unique_queue, "archived") == n + 1
        assert await insp.archive_all_tasks(unique_queue, "aggregating", group="g") == 1
        assert await insp.run_all_tasks(unique_queue, "archived") == 1
    finally:
        transport.script = real  # type: ignore[method-assign]
    assert max(sizes) <= admin.BATCH * 2 + 3  # hashes (+ unique locks) of one batch, never the whole set
    assert len(sizes) >= 3 * 3  # 231 tasks = 3 batches per operation
    keys = await queue_key_names(raw, unique_queue)
    task_keys = [k for k in keys if ":t:" in k]
    assert sorted(task_keys) == sorted([q.task(odd.id), *[k for k in task_keys if k != q.task(odd.id)]])
    assert len(task_keys) == 2  # the grouped task (now pending) and the odd one
    assert not [k for k in keys if ":unique:" in k]  # deleting released the unique lock
    with pytest.raises(FailedPreconditionError):
        await insp.delete_all_tasks(unique_queue, "active")
    with pytest.raises(FailedPreconditionError):
        await insp.run_all_tasks(unique_queue, "pending")


async def test_archive_is_trimmed_with_its_hashes(insp: Inspector, pop: Populated, raw: RawRedis) -> None:
    q = qk(pop.queue)
    old = time.time() - 91 * 86400
    await raw.cmd("ZADD", q.archived, int(old), pop.archived)  # archived 91 days ago
    await insp.archive_task(pop.queue, pop.retry)
    assert await raw.cmd("ZSCORE", q.archived, pop.archived) is None
    assert await raw.cmd("EXISTS", q.task(pop.archived)) == 0
    assert await raw.cmd("ZSCORE", q.archived, pop.retry) is not None


# -- queue deletion -------------------------------------------------------------------------------


async def test_delete_queue(insp: Inspector, pop: Populated, client: Client, raw: RawRedis) -> None:
    q = qk(pop.queue)
    await client.enqueue(Task("t:uniq", b"u"), queue=pop.queue, unique=3600)
    with pytest.raises(FailedPreconditionError, match="active"):
        await insp.delete_queue(pop.queue, force=True)
    assert await raw.cmd("EXISTS", q.paused) == 0  # the temporary pause is lifted on refusal
    # finish the active task (as a server would), then the queue is refused only without force
    msg = decode_task_message(await raw.cmd("HGET", q.task(pop.active), "msg"))
    assert await client._broker.run([client._broker.ack_op(msg)]) == [1]
    with pytest.raises(FailedPreconditionError, match="not empty"):
        await insp.delete_queue(pop.queue)
    assert len(await queue_key_names(raw, pop.queue)) > 15
    deleted = await insp.delete_queue(pop.queue, force=True)
    assert deleted > 15
    assert await queue_key_names(raw, pop.queue) == []
    assert await raw.cmd("SISMEMBER", ALL_QUEUES, pop.queue) == 0
    with pytest.raises(QueueNotFoundError):
        await insp.delete_queue(pop.queue)


async def test_delete_empty_queue_without_force(
    insp: Inspector, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    info = await client.enqueue(Task("x"), queue=unique_queue)
    await insp.delete_task(unique_queue, info.id)
    assert await insp.delete_queue(unique_queue) >= 0
    assert await queue_key_names(raw, unique_queue) == []
    assert unique_queue not in await insp.queues()


# -- servers, cancellation, schedulers ------------------------------------------------------------


async def test_servers_workers_and_cancel(
    redis_target: RedisTarget, insp: Inspector, client: Client, raw: RawRedis, unique_queue: str
) -> None:
    started = anyio.Event()
    cancelled = anyio.Event()

    async def slow(task: Task) -> None:
        started.set()
        try:
            await anyio.sleep(30)
        except BaseException:
            cancelled.set()
            raise

    mux = ServeMux()
    mux.handle_func("slow", slow)
    cfg = Config(concurrency=3, queues={unique_queue: 2}, heartbeat_interval=0.2, shutdown_timeout=1.0)
    server = Server(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs), cfg)
    # an expired heartbeat (a server that died) is not listed
    await raw.cmd("ZADD", "asynq:servers", int(time.time()) - 10, "asynq:servers:{gone:1:dead}")
    with anyio.fail_after(20):
        async with server.serve(mux):
            info = await client.enqueue(Task("slow", {"x": 1}), queue=unique_queue)
            await started.wait()

            async def listed() -> bool:
                mine = [s for s in await insp.servers() if s.id == server.server_id]
                return bool(mine) and len(mine[0].active_workers) == 1

            await wait_until(listed, 10, what="server with its worker listed")
            servers = await insp.servers()
            assert "dead" not in {s.id for s in servers}
            (s,) = [s for s in servers if s.id == server.server_id]
            assert s.concurrency == 3 and s.queues == {unique_queue: 2} and s.status == "active"
            assert abs((datetime.now(tz=UTC) - s.started).total_seconds()) < 15
            (w,) = s.active_workers
            assert (w.task_id, w.task_type, w.queue, w.task_payload) == (
                info.id,
                "slow",
                unique_queue,
                b'{"x":1}',
            )
            t = await insp.get_task_info(unique_queue, info.id)
            assert t.state is TaskState.ACTIVE and not t.is_orphaned

            await insp.cancel_processing(info.id)
            await cancelled.wait()
    assert server.server_id not in {s.id for s in await insp.servers()}


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


async def test_scheduler_entries_and_history(insp: Inspector, raw: RawRedis, unique_queue: str) -> None:
    now = datetime.now(tz=UTC).replace(microsecond=0)
    sid = f"sched-{unique_queue}"
    entries = [
        SchedulerEntry(
            id=f"{unique_queue}-e1", spec="@every 30s", task_type="cron:a", task_payload=b'{"a":1}',
            enqueue_options=['Queue("x")', "MaxRetry(3)"], next_enqueue_time=_ts(now + timedelta(seconds=30)),
            prev_enqueue_time=_ts(now),
        ),
        SchedulerEntry(
            id=f"{unique_queue}-e2", spec="*/5 * * * *", task_type="cron:b",
            next_enqueue_time=_ts(now + timedelta(minutes=5)),
        ),
    ]  # fmt: skip
    key = f"asynq:schedulers:{{{sid}}}"
    await raw.cmd("RPUSH", key, *(e.SerializeToString() for e in entries))
    await raw.cmd("ZADD", "asynq:schedulers", int(time.time()) + 60, key)
    dead = f"asynq:schedulers:{{dead-{unique_queue}}}"
    await raw.cmd("RPUSH", dead, SchedulerEntry(id="dead-entry", spec="@daily").SerializeToString())
    await raw.cmd("ZADD", "asynq:schedulers", int(time.time()) - 60, dead)
    hist = f"asynq:scheduler_history:{unique_queue}-e1"
    for i in range(3):
        when = now - timedelta(minutes=3 - i)
        ev = SchedulerEnqueueEvent(task_id=f"task-{i}", enqueue_time=_ts(when))
        await raw.cmd("ZADD", hist, int(when.timestamp()), ev.SerializeToString())
    try:
        got = [e for e in await insp.scheduler_entries() if e.id.startswith(unique_queue)]
        assert [e.id for e in got] == [f"{unique_queue}-e2", f"{unique_queue}-e1"]  # by spec, as Go
        e1 = got[1]
        assert (e1.spec, e1.task_type, e1.task_payload) == ("@every 30s", "cron:a", b'{"a":1}')
        assert e1.options == ['Queue("x")', "MaxRetry(3)"]
        assert e1.next_enqueue_at == now + timedelta(seconds=30) and e1.prev_enqueue_at == now
        assert got[0].prev_enqueue_at is None
        assert "dead-entry" not in {e.id for e in await insp.scheduler_entries()}

        events = await insp.list_scheduler_enqueue_events(f"{unique_queue}-e1")
        assert [e.task_id for e in events] == ["task-2", "task-1", "task-0"]  # newest first
        assert events[0].enqueued_at == now - timedelta(minutes=1)
        page2 = await insp.list_scheduler_enqueue_events(f"{unique_queue}-e1", page=2, size=2)
        assert [e.task_id for e in page2] == ["task-0"]
    finally:
        for k in (key, dead, hist):
            await raw.cmd("DEL", k)
        await raw.cmd("ZREM", "asynq:schedulers", key, dead)


# -- Redis and cluster ----------------------------------------------------------------------------


async def test_redis_info_and_cluster_location(
    redis_target: RedisTarget, insp: Inspector, client: Client, unique_queue: str
) -> None:
    await client.enqueue(Task("x"), queue=unique_queue)
    nodes, cluster = await insp.redis_info()
    assert all(n.version.count(".") == 2 and n.memory_used > 0 for n in nodes), nodes
    assert await insp.cluster_key_slot(unique_queue) == Inspector.queue_slot(unique_queue)
    with pytest.raises(QueueNotFoundError):
        await insp.cluster_key_slot("no_such_queue")
    if redis_target.kind == "single":
        assert len(nodes) == 1 and cluster == {}
        with pytest.raises(FailedPreconditionError, match="Redis Cluster"):
            await insp.cluster_nodes(unique_queue)
        return
    assert len(nodes) == 6 and [n.role for n in nodes].count("master") == 3
    assert nodes[0].role == "master" and all(len(n.node_id) == 40 for n in nodes)
    assert cluster["cluster_state"] == "ok"
    owners = await insp.cluster_nodes(unique_queue)
    assert [n.role for n in owners] == ["master", "replica"]
    # the master named is the one that really holds the queue's keys
    rc: Any = insp._session.client
    assert rc.get_node_from_key(qk(unique_queue).pending).name == owners[0].addr
