"""Batched enqueue: ``enqueue_many.lua`` (one script call stores a batch of one queue's tasks, each
checked on its own) and the batcher that lets concurrent ``Client.enqueue`` calls share round trips,
on a single Redis and on a cluster. Each caller must still see exactly its own outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import RedisTarget
from workerproc import RawRedis, conn_opt, q

from asynq_aio import (
    Client,
    DuplicateTaskError,
    InvalidTaskError,
    RedisClientOpt,
    RedisUnavailableError,
    RetryPolicy,
    ShardedQueue,
    Task,
    TaskIDConflictError,
    TaskInfo,
)
from asynq_aio._client import OutgoingTask
from asynq_aio._options import EnqueueOptions, prepare, prepare_many
from asynq_aio.protocol.broker import ENQUEUE_CHUNK, EnqueueRequest

pytestmark = pytest.mark.anyio


def build(client: Client, task: Task, queue: str, **kw: Any) -> EnqueueRequest:
    """The request ``Client.enqueue`` would send for ``task``."""
    req, _ = prepare(task, EnqueueOptions(queue=queue, **kw), now=time.time())
    return req


async def pending_ids(raw: RawRedis, queue: str) -> list[str]:
    """Pending oldest first (LPUSH puts the newest at the left)."""
    return [x.decode() for x in reversed(await raw.cmd("LRANGE", q(queue)("pending"), 0, -1))]


async def snapshot(raw: RawRedis, queue: str, ids: list[str]) -> list[Any]:
    k = q(queue)
    out: list[Any] = [
        await raw.cmd("LRANGE", k("pending"), 0, -1),
        await raw.cmd("ZRANGE", k("scheduled"), 0, -1, "WITHSCORES"),
        await raw.cmd("ZRANGE", k("g:g1"), 0, -1, "WITHSCORES"),
        await raw.cmd("SMEMBERS", k("groups")),
    ]
    for i in ids:
        out.append(await raw.cmd("HGETALL", k(f"t:{i}")))
    return out


async def test_mixed_batch_gives_each_task_its_own_outcome(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    k = q(unique_queue)
    taken = await client.enqueue(Task("t", b"first"), queue=unique_queue, task_id="taken")
    held = await client.enqueue(Task("u", b"same"), queue=unique_queue, unique=300)
    reqs = [
        build(client, Task("t", b"plain-1"), unique_queue),
        build(client, Task("t", b"other"), unique_queue, task_id="taken"),
        build(client, Task("u", b"same"), unique_queue, unique=300),
        build(client, Task("t", b"later"), unique_queue, process_in=3600),
        build(client, Task("t", b"grouped"), unique_queue, group="g1"),
        build(client, Task("t", b"plain-2"), unique_queue),
        build(client, Task("u", b"fresh"), unique_queue, unique=300),
    ]
    ids = [r.msg.id for r in reqs]
    outcomes = await client._broker.enqueue_many(reqs)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], TaskIDConflictError)
    assert isinstance(outcomes[2], DuplicateTaskError)
    assert outcomes[3:] == [None, None, None, None]

    # the conflicting and duplicate ones changed nothing; the others are stored where they belong
    assert (await raw.cmd("HGET", k("t:taken"), "msg")) is not None
    assert await raw.cmd("GET", reqs[2].msg.unique_key) == held.id.encode()
    assert await pending_ids(raw, unique_queue) == [taken.id, held.id, ids[0], ids[5], ids[6]]
    assert await raw.cmd("ZSCORE", k("scheduled"), ids[3]) is not None
    assert await raw.cmd("ZSCORE", k("g:g1"), ids[4]) is not None
    assert await raw.cmd("SMEMBERS", k("groups")) == {b"g1"}
    assert await raw.cmd("GET", reqs[6].msg.unique_key) == ids[6].encode()
    assert await raw.cmd("HGET", k(f"t:{ids[6]}"), "unique_key") == reqs[6].msg.unique_key.encode()
    assert await raw.cmd("HGET", k(f"t:{ids[3]}"), "state") == b"scheduled"
    assert await raw.cmd("HGET", k(f"t:{ids[4]}"), "state") == b"aggregating"
    assert await raw.cmd("HGET", k(f"t:{ids[4]}"), "group") == b"g1"


async def test_batch_stores_the_same_fields_as_the_single_script(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """enqueue_many.lua and enqueue.lua must leave the same hash fields for each kind of task."""
    k = q(unique_queue)
    kinds: list[dict[str, Any]] = [{}, {"process_in": 600}, {"group": "g1"}, {"unique": 60}]
    for i, kw in enumerate(kinds):
        one = build(client, Task("t", f"one-{i}".encode()), unique_queue, **kw)
        many = build(client, Task("t", f"many-{i}".encode()), unique_queue, **kw)
        await client._broker.enqueue(one)
        assert await client._broker.enqueue_many([many]) == [None]
        a = await raw.cmd("HGETALL", k(f"t:{one.msg.id}"))
        b = await raw.cmd("HGETALL", k(f"t:{many.msg.id}"))
        assert set(a) == set(b), kw
        assert a[b"state"] == b[b"state"]
        assert a.get(b"group") == b.get(b"group")
        assert (b"unique_key" in a) == (b"unique_key" in b)


async def test_order_is_kept_across_chunks_and_queues(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    other = unique_queue + "-b"
    reqs = [build(client, Task("t", str(i).encode()), unique_queue if i % 3 else other) for i in range(300)]
    assert await client._broker.enqueue_many(reqs, chunk=16) == [None] * 300
    assert await pending_ids(raw, unique_queue) == [r.msg.id for r in reqs if r.msg.queue == unique_queue]
    assert await pending_ids(raw, other) == [r.msg.id for r in reqs if r.msg.queue == other]
    await raw.cmd("DEL", q(other)("pending"))


async def test_client_enqueue_many_larger_than_a_chunk(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    n = ENQUEUE_CHUNK * 2 + 7
    infos = await client.enqueue_many([Task("t", str(i).encode()) for i in range(n)], queue=unique_queue)
    ids = [i.id for i in infos if isinstance(i, TaskInfo)]
    assert len(ids) == n
    assert await pending_ids(raw, unique_queue) == ids


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"process_in": 600},
        {"group": "g1"},
        {"timeout": 0.3, "retention": 60, "max_retry": 2},
        {"deadline": datetime(2031, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)},
    ],
    ids=["plain", "scheduled", "grouped", "limits", "deadline"],
)
def test_a_batch_built_once_matches_tasks_built_one_by_one(kw: dict[str, Any]) -> None:
    """prepare_many resolves the options once for the whole batch: every task must still come out
    as prepare() builds it alone, its own ID aside (each task gets a new one)."""
    tasks = [Task("t", f"p{i}".encode(), headers={"h": str(i)}) for i in range(5)]
    now = time.time()
    options = EnqueueOptions(queue="batch-q", **kw)
    batch = prepare_many(tasks, options, now=now)
    assert len({req.msg.id for req, _ in batch}) == len(tasks)
    for task, (req, info) in zip(tasks, batch, strict=True):
        alone_req, alone_info = prepare(task, replace(options, task_id=req.msg.id), now=now)
        assert req.msg == alone_req.msg
        assert (req.process_at, req.unique_ttl) == (alone_req.process_at, alone_req.unique_ttl)
        assert info == alone_info


def test_a_batch_deals_a_sharded_queue_and_refuses_one_task_id_for_many() -> None:
    hot = ShardedQueue("hot-batch", 3)
    batch = prepare_many([Task("t") for _ in range(7)], EnqueueOptions(queue=hot), now=time.time())
    assert [req.msg.queue for req, _ in batch] == [hot.names[i % 3] for i in range(7)]
    with pytest.raises(InvalidTaskError, match="task_id names one task"):
        prepare_many([Task("t"), Task("t")], EnqueueOptions(task_id="same"), now=time.time())
    (one,) = prepare_many([Task("t")], EnqueueOptions(task_id="only"), now=time.time())
    assert one[0].msg.id == "only"
    assert prepare_many([], EnqueueOptions(task_id="none"), now=time.time()) == []


async def test_a_resent_batch_changes_nothing_and_reports_success(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    await client.enqueue(Task("t", b"first"), queue=unique_queue, task_id="taken")
    reqs = [
        build(client, Task("t", b"plain"), unique_queue),
        build(client, Task("t", b"chosen"), unique_queue, task_id="mine"),
        build(client, Task("t", b"chosen-again"), unique_queue, task_id="mine"),  # same ID twice
        build(client, Task("t", b"clash"), unique_queue, task_id="taken"),
        build(client, Task("u", b"locked"), unique_queue, unique=300),
        build(client, Task("t", b"later"), unique_queue, process_in=3600),
        build(client, Task("t", b"grouped"), unique_queue, group="g1"),
    ]
    ops = client._broker.enqueue_ops(reqs)
    assert len(ops) == 1
    first = await client._broker.run([ops[0][0]])
    assert first == [[1, 1, -1, -1, 1, 1, 1]]
    ids = ["taken", *(r.msg.id for r in reqs)]
    before = await snapshot(raw, unique_queue, ids)
    again = await client._broker.run([ops[0][0]])
    assert again == first
    assert await snapshot(raw, unique_queue, ids) == before


async def test_concurrent_enqueues_share_round_trips_and_keep_their_own_outcome(
    client: Client, raw: RawRedis, unique_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.enqueue(Task("t", b"first"), queue=unique_queue, task_id="taken")
    writes = 0
    real = client._broker.enqueue_many

    async def counting(reqs: Any, **kw: Any) -> list[Exception | None]:
        nonlocal writes
        writes += 1
        return await real(reqs, **kw)

    monkeypatch.setattr(client._broker, "enqueue_many", counting)
    calls = [
        client.enqueue(Task("t", str(i).encode()), queue=unique_queue, task_id="taken" if i == 77 else None)
        for i in range(200)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[77], TaskIDConflictError)
    infos = [r for i, r in enumerate(results) if i != 77]
    assert all(isinstance(r, TaskInfo) for r in infos)
    ids = [r.id for r in infos if isinstance(r, TaskInfo)]
    assert len(set(ids)) == 199
    assert [r.payload for r in infos if isinstance(r, TaskInfo)] == [
        str(i).encode() for i in range(200) if i != 77
    ]
    assert set(await pending_ids(raw, unique_queue)) == {"taken", *ids}
    assert 1 <= writes < 20  # batched: far fewer writes than callers
    assert not client._batcher._flushers


async def test_a_cancelled_caller_does_not_disturb_the_others(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    tasks = [
        asyncio.ensure_future(client.enqueue(Task("t", str(i).encode()), queue=unique_queue))
        for i in range(100)
    ]
    await asyncio.sleep(0)  # the first writes are on the wire, the rest queued behind them
    for t in tasks[5::10]:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    kept = [r for i, r in enumerate(results) if (i - 5) % 10]
    assert all(isinstance(r, TaskInfo) for r in kept)
    stored = set(await pending_ids(raw, unique_queue))
    assert {r.id for r in kept if isinstance(r, TaskInfo)} <= stored
    # a caller cancelled while still queued is not written: nothing beyond the kept ones and those
    # cancelled ones whose write was already on the wire
    assert len(stored) <= 100
    # the batcher still works and no flusher is left behind
    after = await asyncio.gather(
        *(client.enqueue(Task("t", b"after"), queue=unique_queue) for _ in range(20))
    )
    assert len({a.id for a in after}) == 20
    assert not client._batcher._flushers


async def test_a_transport_error_reaches_every_caller_of_the_batch() -> None:
    dead = Client(RedisClientOpt(addr="127.0.0.1:1"), retry=RetryPolicy(budget=0.3))
    try:
        results = await asyncio.gather(
            *(dead.enqueue(Task("t", str(i).encode()), queue="nowhere") for i in range(30)),
            return_exceptions=True,
        )
        assert all(isinstance(r, RedisUnavailableError) for r in results), results
    finally:
        await dead.aclose()
    assert not dead._batcher._flushers


async def test_aclose_drains_writes_in_flight_and_leaves_no_flusher(
    redis_target: RedisTarget, raw: RawRedis, unique_queue: str
) -> None:
    c = Client(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs))
    await c.enqueue(Task("t", b"warm"), queue=unique_queue)  # registered: the next calls go straight on
    tasks = [asyncio.ensure_future(c.enqueue(Task("t", b"x"), queue=unique_queue)) for _ in range(100)]
    await asyncio.sleep(0)
    assert c._batcher._inflight > 0  # writes on the wire, the rest queued behind them
    await c.aclose()
    assert not c._batcher._flushers
    assert all(t.done() for t in tasks)
    infos = [t.result() for t in tasks]  # drained: every caller's task was written before closing
    assert len(await pending_ids(raw, unique_queue)) == 1 + len({i.id for i in infos})


async def test_hooks_see_each_concurrent_callers_own_outcome(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    await client.enqueue(Task("t", b"first"), queue=unique_queue, task_id="taken")
    seen: dict[str, str] = {}

    def hook(out: OutgoingTask) -> Any:
        @contextmanager
        def around() -> Iterator[None]:
            try:
                yield
            except Exception as exc:
                seen[out.task_id] = type(exc).__name__
                raise
            seen[out.task_id] = "ok"

        return around()

    client.add_enqueue_hook(hook)
    start = time.monotonic()
    results = await asyncio.gather(
        *(
            client.enqueue(Task("t", b"%d" % i), queue=unique_queue, task_id="taken" if i == 3 else None)
            for i in range(50)
        ),
        return_exceptions=True,
    )
    assert time.monotonic() - start < 10
    assert isinstance(results[3], TaskIDConflictError)
    assert seen.pop("taken") == "TaskIDConflictError"
    assert set(seen.values()) == {"ok"}
    assert len(seen) == 49
