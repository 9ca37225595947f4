"""MemoryBroker (tests/testbroker.py) against the real Broker: the same calls on both, the same
replies and the same state afterwards.

The component tests trust MemoryBroker to behave like the Lua scripts; these scenarios keep it
honest. Each step runs on both brokers (with one fake clock, so scores and timestamps agree), then
compares replies and a full snapshot of the queue: lists in order, zsets with scores, counters, and
every task's hash (state, message, whether an attempt token is set, pending_since). A change to a
script that the fake does not follow fails here. Real Redis, single and cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from conftest import RedisTarget
from testbroker import FakeClock, MemoryBroker, TaskHash, make_message
from workerproc import RawRedis, conn_opt

from asynq_aio._errors import MalformedTaskError
from asynq_aio.protocol._redis.ops import Op
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.broker import PAUSED, Broker, EnqueueRequest, MalformedRecord, Paused
from asynq_aio.protocol.codec import TaskMessage, decode_task_message
from asynq_aio.protocol.keys import queue_keys
from asynq_aio.protocol.replies import hash_fields, score_pairs, text
from asynq_aio.server.storage import WorkerBroker

pytestmark = pytest.mark.anyio


@pytest.fixture
async def transport(redis_target: RedisTarget) -> AsyncIterator[Transport]:
    t = Transport.connect(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs))
    try:
        yield t
    finally:
        await t.aclose()


def _msg_of(raw: bytes | None) -> TaskMessage | bytes | None:
    if raw is None:
        return None
    try:
        return decode_task_message(raw)
    except MalformedTaskError:
        return raw


HashView = tuple[str | None, bool, TaskMessage | bytes | None, int | None, bytes | None] | None


def _mem_hash(h: TaskHash | None) -> HashView:
    if h is None:
        return None
    return (h.state, h.attempt is not None, _msg_of(h.msg), h.pending_since, h.result)


class Pair:
    """One queue on two brokers: the real one over Redis and a MemoryBroker, with each one's attempt
    tokens (they differ: each broker draws its own)."""

    def __init__(self, transport: Transport, raw: RawRedis, queue: str) -> None:
        self.clock = FakeClock(1_700_000_000.0)
        self.real = Broker(transport, clock=self.clock)
        self.mem = MemoryBroker(clock=self.clock)
        self.raw = raw
        self.queue = queue
        self.tokens: dict[int, dict[str, str]] = {id(self.real): {}, id(self.mem): {}}
        self.ids: set[str] = set()

    def brokers(self) -> list[WorkerBroker]:
        return [self.real, self.mem]

    def token(self, broker: WorkerBroker, task_id: str) -> str:
        return self.tokens[id(broker)][task_id]

    async def enqueue(self, msg: TaskMessage, process_at: float | None = None) -> None:
        await self.real.enqueue(EnqueueRequest(msg, process_at=process_at))
        self.mem.enqueue(msg, process_at=process_at)
        self.ids.add(msg.id)

    async def dequeue(self, count: int, lease_until: float) -> list[tuple[str, bytes]] | Paused:
        """Dequeue on both; the replies must agree (each task's lease too) but for the tokens, which
        are remembered."""
        out: list[list[tuple[str, bytes]] | Paused] = []
        leases: list[list[float]] = []
        for b in self.brokers():
            got = await b.dequeue(self.queue, count, lease_until)
            if isinstance(got, Paused):
                out.append(got)
                leases.append([])
                continue
            assert len({d.attempt for d in got}) <= 1  # one call, one token
            for d in got:
                self.tokens[id(b)][d.task_id] = d.attempt
            out.append([(d.task_id, d.raw) for d in got])
            leases.append([d.lease_until for d in got])
        assert out[0] == out[1] and leases[0] == leases[1]
        await self.same_state()
        return out[0]

    async def same(self, call: Callable[[WorkerBroker], Awaitable[Any]]) -> Any:
        """The same call on both brokers: equal replies, equal state after."""
        real, mem = await call(self.real), await call(self.mem)
        assert real == mem
        await self.same_state()
        return real

    async def run(self, ops: Callable[[WorkerBroker], Sequence[Op]]) -> list[Any]:
        result: list[Any] = await self.same(lambda b: b.run(ops(b)))
        return result

    async def same_state(self) -> None:
        assert await self.real_state() == self.mem_state()

    def mem_state(self) -> dict[str, Any]:
        q = self.mem.queue(self.queue)
        return {
            "pending": list(q.pending),
            "active": list(q.active),
            "lease": dict(q.lease),
            "scheduled": dict(q.scheduled),
            "retry": dict(q.retry),
            "archived": dict(q.archived),
            "completed": dict(q.completed),
            "processed": q.processed,
            "failed": q.failed,
            "tasks": {tid: _mem_hash(q.tasks.get(tid)) for tid in sorted(self.ids)},
        }

    async def real_state(self) -> dict[str, Any]:
        qk = queue_keys(self.queue)

        async def zset(key: str) -> dict[str, float]:
            return dict(score_pairs(await self.raw.cmd("ZRANGE", key, 0, -1, "WITHSCORES")))

        async def lst(key: str) -> list[str]:
            return [text(x) for x in await self.raw.cmd("LRANGE", key, 0, -1)]

        async def count(key: str) -> int:
            return int(await self.raw.cmd("GET", key) or 0)

        tasks: dict[str, HashView] = {}
        for tid in sorted(self.ids):
            f = hash_fields(await self.raw.cmd("HGETALL", qk.task(tid)))
            since = f.get("pending_since")
            tasks[tid] = (
                (
                    text(f["state"]) if "state" in f else None,
                    "aio_attempt" in f,
                    _msg_of(f.get("msg")),
                    int(since) if since is not None else None,
                    f.get("result"),
                )
                if f
                else None
            )
        return {
            "pending": await lst(qk.pending),
            "active": await lst(qk.active),
            "lease": await zset(qk.lease),
            "scheduled": await zset(qk.scheduled),
            "retry": await zset(qk.retry),
            "archived": await zset(qk.archived),
            "completed": await zset(qk.completed),
            "processed": await count(qk.processed),
            "failed": await count(qk.failed),
            "tasks": tasks,
        }


@pytest.fixture
async def pair(transport: Transport, raw: RawRedis, unique_queue: str) -> Pair:
    return Pair(transport, raw, unique_queue)


async def test_outcomes_and_their_fencing_agree(pair: Pair) -> None:
    q, now = pair.queue, pair.clock()
    m = [make_message(q, f"m{i}", payload=bytes([i])) for i in range(5)]
    m[2] = make_message(q, "m2", payload=b"\x02", retention_s=60)
    for msg in m:
        await pair.enqueue(msg)
    await pair.same_state()
    assert await pair.dequeue(3, now + 60) == [(x.id, x.SerializeToString()) for x in m[:3]]

    assert await pair.run(
        lambda b: [
            b.ack_op(m[0], attempt=pair.token(b, "m0")),
            b.ack_op(m[1], attempt="someone-else-1"),  # a stale attempt: no-op
            b.fail_op(m[1], error="boom", archive=False, retry_at=now + 30, attempt=pair.token(b, "m1")),
            b.fail_op(m[1], error="boom", archive=False, retry_at=now + 30, attempt=pair.token(b, "m1")),
        ]
    ) == [1, 0, 1, 0]
    # one ack_many: the task kept as completed (retention) and the one already acked
    assert await pair.run(
        lambda b: [b.ack_many_op(q, [m[2], m[0]], attempts=[pair.token(b, "m2"), pair.token(b, "m0")])]
    ) == [[1, 0]]

    assert await pair.dequeue(1, now + 60) == [("m3", m[3].SerializeToString())]
    # a result lands only while the attempt owns the task, and never creates a hash
    assert await pair.same(lambda b: b.write_result(q, "m3", b"late", attempt="someone-else-1")) is False
    assert await pair.same(lambda b: b.write_result(q, "m3", b"42", attempt=pair.token(b, "m3"))) is True
    assert await pair.same(lambda b: b.write_result(q, "m0", b"gone", attempt="")) is False
    assert await pair.same(lambda b: b.extend_leases(q, [("m3", "someone-else-1")], now + 90)) == ["m3"]
    assert await pair.same(lambda b: b.extend_leases(q, [("m3", pair.token(b, "m3"))], now + 90)) == []
    requeue = {id(b): b.requeue_op(q, "m3", attempt=pair.token(b, "m3")) for b in pair.brokers()}
    assert await pair.run(lambda b: [requeue[id(b)]]) == [1]
    assert await pair.run(lambda b: [requeue[id(b)]]) == [0]  # a re-send changes nothing
    # the requeued task is the next one out (before m4, enqueued earlier), under a new token
    assert await pair.dequeue(1, now + 60) == [("m3", m[3].SerializeToString())]
    assert await pair.run(lambda b: [b.fail_op(m[3], error="no", archive=True, attempt="")]) == [1]


async def test_lease_expiry_recovery_and_orphans_agree(pair: Pair) -> None:
    q, now = pair.queue, pair.clock()
    m = [make_message(q, "m0", max_retry=0), make_message(q, "m1"), make_message(q, "m2")]
    for msg in m:
        await pair.enqueue(msg)
    # a record another writer left: not a TaskMessage at all
    garbage = b"\xff\xfe not a protobuf"
    since = int(now * 1e9)
    qk = queue_keys(q)
    await pair.raw.cmd("HSET", qk.task("bad"), "msg", garbage, "state", "pending", "pending_since", since)
    await pair.raw.cmd("LPUSH", qk.pending, "bad")
    pair.mem.put_raw(q, "bad", garbage)
    pair.ids.add("bad")
    await pair.same_state()

    got = await pair.dequeue(4, now - 100)
    assert isinstance(got, list) and [tid for tid, _ in got] == ["m0", "m1", "m2", "bad"]
    assert await pair.same(
        lambda b: b.extend_leases(q, [("m1", pair.token(b, "m1")), ("m2", "someone-else-1")], now + 100)
    ) == ["m2"]

    found = await pair.same(lambda b: b.expired_leases(q, now))
    assert [type(x).__name__ for x in found] == ["MalformedRecord", "TaskMessage", "TaskMessage"]
    assert [x.task_id if isinstance(x, MalformedRecord) else x.id for x in found] == ["bad", "m0", "m2"]

    async def recover(b: WorkerBroker) -> list[Any]:
        expired = await b.expired_leases(q, now)
        bad = expired[0]
        assert isinstance(bad, MalformedRecord)
        return await b.run(
            [
                # m1's lease is alive: a recovery of it is a no-op
                b.fail_op(m[1], error="lease", archive=False, retry_at=now, only_if_lease_expired_by=now),
                b.fail_op(m[0], error="lease", archive=True, only_if_lease_expired_by=now),
                b.fail_op(m[2], error="lease", archive=False, retry_at=now + 5, only_if_lease_expired_by=now),
                b.archive_malformed_op(bad, only_if_lease_expired_by=now),
            ]
        )

    assert await pair.same(recover) == [0, 1, 1, 1]

    # m1 loses its lease entry (a foreign writer): healed back to pending, as the next one out
    await pair.enqueue(make_message(q, "m3"))
    await pair.raw.cmd("ZREM", qk.lease, "m1")
    del pair.mem.queue(q).lease["m1"]
    assert await pair.same(lambda b: b.heal_orphans(q)) == 1
    assert await pair.same(lambda b: b.heal_orphans(q)) == 0


async def test_dequeue_edges_scheduling_and_cleanup_agree(pair: Pair) -> None:
    q, now = pair.queue, pair.clock()
    qk = queue_keys(q)
    assert await pair.dequeue(5, now + 60) == []
    keep = make_message(q, "keep", retention_s=60)
    await pair.enqueue(keep)
    await pair.real.pause(q)
    pair.mem.pause(q)
    assert await pair.dequeue(5, now + 60) is PAUSED
    await pair.real.unpause(q)
    pair.mem.unpause(q)

    # an ID without a hash is dropped; a hash with an empty msg is handed out (to be archived)
    await pair.raw.cmd("LPUSH", qk.pending, "ghost")
    pair.mem.queue(q).pending.insert(0, "ghost")
    await pair.raw.cmd("HSET", qk.task("empty"), "msg", b"", "state", "pending")
    await pair.raw.cmd("LPUSH", qk.pending, "empty")
    pair.mem.queue(q).tasks["empty"] = TaskHash(msg=b"", state="pending")
    pair.mem.queue(q).pending.insert(0, "empty")
    pair.ids |= {"ghost", "empty"}
    await pair.same_state()
    assert await pair.dequeue(5, now + 60) == [("keep", keep.SerializeToString()), ("empty", b"")]

    # scheduled and retry tasks come due with the clock (to the millisecond); the earliest is each
    # queue's next due time (None for a queue with neither)
    later = make_message(q, "later")
    await pair.enqueue(later, process_at=now + 10.25)
    assert await pair.run(
        lambda b: [b.fail_op(keep, error="x", archive=False, retry_at=now + 5, attempt=pair.token(b, "keep"))]
    ) == [1]
    assert await pair.same(lambda b: b.next_dues([q, f"{q}-idle"])) == [now + 5, None]
    assert await pair.same(lambda b: b.forward(q)) == 0
    pair.clock.advance(6)
    assert await pair.same(lambda b: b.forward(q)) == 1
    assert await pair.same(lambda b: b.next_dues([q])) == [now + 10.25]
    pair.clock.advance(4.2)
    assert await pair.same(lambda b: b.forward(q)) == 0
    pair.clock.advance(0.1)
    assert await pair.same(lambda b: b.forward(q)) == 1
    assert await pair.same(lambda b: b.next_dues([q])) == [None]

    # completed with a retention: deleted once it has passed
    got = await pair.dequeue(1, pair.clock() + 60)
    assert got == [("keep", pair.mem.queue(q).message("keep").SerializeToString())]
    # what the recoverer looks at: an ID in active (or a lease)
    assert await pair.same(lambda b: b.holds_tasks([q, f"{q}-idle"])) == [True, False]
    reloaded = pair.mem.queue(q).message("keep")
    assert await pair.run(lambda b: [b.ack_op(reloaded, attempt=pair.token(b, "keep"))]) == [1]
    assert await pair.same(lambda b: b.delete_expired_completed(q)) == 0
    assert await pair.same(lambda b: b.needs_cleanup([q])) == [False]  # the janitor's look
    pair.clock.advance(61)
    assert await pair.same(lambda b: b.needs_cleanup([q, f"{q}-idle"])) == [True, False]
    assert await pair.same(lambda b: b.delete_expired_completed(q)) == 1
    assert await pair.same(lambda b: b.needs_cleanup([q])) == [False]

    # an archived task past Asynq's 90 days goes, hash and all; a recent one stays
    for tid, age in (("ancient", 91 * 86400), ("recent", 60)):
        score = int(pair.clock() - age)
        await pair.raw.cmd("HSET", qk.task(tid), "msg", b"x", "state", "archived")
        await pair.raw.cmd("ZADD", qk.archived, score, tid)
        pair.mem.queue(q).tasks[tid] = TaskHash(msg=b"x", state="archived")
        pair.mem.queue(q).archived[tid] = float(score)
        pair.ids.add(tid)
    assert await pair.same(lambda b: b.needs_cleanup([q])) == [True]
    assert await pair.same(lambda b: b.trim_archive(q)) == 1
    assert await pair.same(lambda b: b.needs_cleanup([q])) == [False]  # "recent" is within the limits


async def test_state_sweeping_agrees(pair: Pair) -> None:
    q, now = pair.queue, pair.clock()
    qk = queue_keys(q)
    for i in range(3):
        await pair.enqueue(make_message(q, f"m{i}"))
    # m1's hash says scheduled while it sits in pending (a hand edit)
    await pair.raw.cmd("HSET", qk.task("m1"), "state", "scheduled")
    pair.mem.queue(q).tasks["m1"].state = "scheduled"
    await pair.same_state()
    sample = await pair.same(lambda b: b.sample_states(q, "pending", 0, 10))
    assert sample == [("m2", "pending"), ("m1", "scheduled"), ("m0", "pending")]
    pair.clock.advance(1)
    assert await pair.same(lambda b: b.fix_states(q, [("m1", "pending"), ("m0", "pending")])) == [1, 0]
    assert await pair.dequeue(1, now + 60) == [("m0", make_message(q, "m0").SerializeToString())]
