"""Client: what an enqueue stores, byte for byte, on a single Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel, ConfigDict, Field
from test_inspector import queue_key_names
from workerproc import RawRedis, q

import asynq_aio._options
from asynq_aio import (
    Client,
    DuplicateTaskError,
    InvalidQueueName,
    InvalidTaskError,
    RedisClientOpt,
    RedisUnavailableError,
    RetryPolicy,
    Task,
    TaskIDConflictError,
    TaskInfo,
    TaskState,
)
from asynq_aio.protocol.broker import EnqueueRequest
from asynq_aio.protocol.codec import decode_task_message, new_task_message

pytestmark = pytest.mark.anyio


class EmailPayload(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    to: int
    from_: int = Field(alias="from")


async def hgetall(raw: RawRedis, key: str) -> dict[str, bytes]:
    reply = await raw.cmd("HGETALL", key)
    if isinstance(reply, dict):
        return {k.decode(): bytes(v) for k, v in reply.items()}
    return {reply[i].decode(): bytes(reply[i + 1]) for i in range(0, len(reply), 2)}


async def test_enqueue_writes_hash_fields_and_lpushes_id(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    k = q(unique_queue)
    before_ns = time.time_ns()
    info = await client.enqueue(Task("email:send", b"hello"), queue=unique_queue)
    after_ns = time.time_ns()

    fields = await hgetall(raw, k(f"t:{info.id}"))
    assert set(fields) == {"msg", "state", "pending_since"}
    assert fields["state"] == b"pending"
    pending_since = int(fields["pending_since"])
    assert before_ns - 1_000_000_000 <= pending_since <= after_ns + 1_000_000_000
    msg = decode_task_message(fields["msg"])
    assert msg.type == "email:send"
    assert msg.payload == b"hello"
    assert msg.id == info.id
    assert msg.queue == unique_queue
    assert msg.retry == 25  # default max retry
    assert msg.timeout == 1800  # default timeout when neither timeout nor deadline is given
    assert msg.deadline == 0
    assert msg.retried == 0
    assert msg.error_msg == ""
    assert msg.unique_key == ""
    assert await raw.cmd("LRANGE", k("pending"), 0, -1) == [info.id.encode()]
    assert await raw.cmd("ZCARD", k("scheduled")) == 0

    # a second task goes to the left end: dequeue takes from the right (oldest first)
    info2 = await client.enqueue(Task("email:send", b"again"), queue=unique_queue)
    assert await raw.cmd("LRANGE", k("pending"), 0, -1) == [info2.id.encode(), info.id.encode()]


async def test_task_info_fields(client: Client, raw: RawRedis, unique_queue: str) -> None:
    deadline = datetime.now(tz=UTC).replace(microsecond=0) + timedelta(hours=1)
    info = await client.enqueue(
        Task("report:build", b"p", headers={"trace": "abc"}),
        queue=unique_queue,
        max_retry=3,
        timeout=timedelta(seconds=90),
        deadline=deadline,
        retention=120,
    )
    assert isinstance(info, TaskInfo)
    uuid.UUID(info.id)  # default IDs are UUIDs
    assert info.queue == unique_queue
    assert info.type == "report:build"
    assert info.payload == b"p"
    assert info.headers == {"trace": "abc"}
    assert info.state == TaskState.PENDING
    assert info.max_retry == 3
    assert info.retried == 0
    assert info.timeout == timedelta(seconds=90)
    assert info.deadline == deadline
    assert info.retention == timedelta(seconds=120)
    assert info.next_process_at is not None
    assert abs((info.next_process_at - datetime.now(tz=UTC)).total_seconds()) < 5

    default = await client.enqueue(Task("x"), queue=unique_queue)
    assert default.max_retry == 25
    assert default.timeout == timedelta(minutes=30)
    assert default.deadline is None

    # Asynq stores whole seconds: a fraction rounds up, never down to 0 (0 = the 30-minute default)
    short = await client.enqueue(Task("x"), queue=unique_queue, timeout=0.3, retention=0.5)
    assert short.timeout == timedelta(seconds=1)
    assert short.retention == timedelta(seconds=1)
    stored = decode_task_message(await raw.cmd("HGET", f"asynq:{{{unique_queue}}}:t:{short.id}", "msg"))
    assert (stored.timeout, stored.retention) == (1, 1)


async def test_process_in_goes_to_scheduled_with_the_right_score(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    k = q(unique_queue)
    t0 = time.time()
    info = await client.enqueue(Task("later"), queue=unique_queue, process_in=30)
    t1 = time.time()

    assert info.state == TaskState.SCHEDULED
    assert info.next_process_at is not None
    assert t0 + 30 - 1 <= info.next_process_at.timestamp() <= t1 + 30 + 1
    score = float(await raw.cmd("ZSCORE", k("scheduled"), info.id))
    # the score keeps its milliseconds (Go's forwarder compares it with whole seconds, fine too)
    assert round(t0 + 30, 3) <= score <= round(t1 + 30, 3)
    assert score == round(info.next_process_at.timestamp(), 3)
    assert await raw.cmd("LLEN", k("pending")) == 0
    fields = await hgetall(raw, k(f"t:{info.id}"))
    assert fields["state"] == b"scheduled"
    assert "pending_since" not in fields

    at = datetime.now(tz=UTC) + timedelta(minutes=5)
    info2 = await client.enqueue(Task("later"), queue=unique_queue, process_at=at)
    score2 = float(await raw.cmd("ZSCORE", k("scheduled"), info2.id))
    assert score2 == round(at.timestamp(), 3)


async def test_task_id_conflict_raises_and_writes_nothing(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    k = q(unique_queue)
    first = await client.enqueue(Task("a", b"one"), queue=unique_queue, task_id="fixed-id")
    before = await hgetall(raw, k("t:fixed-id"))

    with pytest.raises(TaskIDConflictError, match="fixed-id"):
        await client.enqueue(Task("a", b"two"), queue=unique_queue, task_id="fixed-id")
    with pytest.raises(TaskIDConflictError):
        await client.enqueue(Task("b", b"one"), queue=unique_queue, task_id="fixed-id", process_in=60)
    with pytest.raises(TaskIDConflictError):
        await client.enqueue(Task("a", b"one"), queue=unique_queue, task_id="fixed-id", unique=60)

    assert await hgetall(raw, k("t:fixed-id")) == before
    assert decode_task_message(before["msg"]).payload == b"one"
    assert await raw.cmd("LRANGE", k("pending"), 0, -1) == [first.id.encode()]
    assert await raw.cmd("ZCARD", k("scheduled")) == 0
    # the unique lock of the rejected third call was not taken
    lock = k(f"unique:a:{hashlib.md5(b'one').hexdigest()}")
    assert await raw.cmd("EXISTS", lock) == 0


async def test_repeating_an_identical_enqueue_with_the_same_id_is_a_conflict(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """PROTOCOL.md: enqueue fails with a task-ID conflict while the hash exists, in any state.

    A second, separate call with the same task_id is not a network re-send of the first one, so the
    caller must learn that the task already existed (Go's ErrTaskIDConflict)."""
    await client.enqueue(Task("a", b"same"), queue=unique_queue, task_id="again-id")
    with pytest.raises(TaskIDConflictError):
        await client.enqueue(Task("a", b"same"), queue=unique_queue, task_id="again-id")
    assert await raw.cmd("LLEN", q(unique_queue)("pending")) == 1


async def test_unique_lock_holds_task_id_with_ttl_and_rejects_duplicates(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    k = q(unique_queue)
    payload = b'{"user":1}'
    lock = k(f"unique:report:{hashlib.md5(payload).hexdigest()}")

    info = await client.enqueue(Task("report", payload), queue=unique_queue, unique=60)

    assert info.unique_key == lock
    assert await raw.cmd("GET", lock) == info.id.encode()
    ttl = int(await raw.cmd("TTL", lock))
    assert 55 <= ttl <= 60
    fields = await hgetall(raw, k(f"t:{info.id}"))
    assert fields["unique_key"] == lock.encode()
    assert decode_task_message(fields["msg"]).unique_key == lock

    with pytest.raises(DuplicateTaskError):
        await client.enqueue(Task("report", payload), queue=unique_queue, unique=60, task_id="dup-2")
    with pytest.raises(DuplicateTaskError):
        await client.enqueue(
            Task("report", payload), queue=unique_queue, unique=60, process_in=30, task_id="dup-3"
        )
    assert await raw.cmd("EXISTS", k("t:dup-2"), k("t:dup-3")) == 0
    assert await raw.cmd("LRANGE", k("pending"), 0, -1) == [info.id.encode()]
    assert await raw.cmd("ZCARD", k("scheduled")) == 0
    assert await raw.cmd("GET", lock) == info.id.encode()

    # a different payload is a different lock; an empty payload takes Go's nil-payload lock
    # (base.UniqueKey with a nil payload: "<type>:" with a trailing colon and no digest)
    other = await client.enqueue(Task("report", b"other"), queue=unique_queue, unique=60)
    assert other.id != info.id
    empty = await client.enqueue(Task("report"), queue=unique_queue, unique=60)
    assert await raw.cmd("GET", k("unique:report:")) == empty.id.encode()

    # a scheduled unique task holds its lock for the TTL plus the delay
    sched = await client.enqueue(Task("sched", b"s"), queue=unique_queue, unique=60, process_in=100)
    sched_ttl = int(await raw.cmd("TTL", k(f"unique:sched:{hashlib.md5(b's').hexdigest()}")))
    assert sched.state == TaskState.SCHEDULED
    assert 150 <= sched_ttl <= 160


@pytest.mark.parametrize("bad", ["a{b", "}", "", "{", "   "])
async def test_invalid_queue_names_are_rejected_before_anything_is_written(
    client: Client, raw: RawRedis, bad: str
) -> None:
    with pytest.raises(InvalidQueueName):
        await client.enqueue(Task("x"), queue=bad, task_id="bad-queue-task")
    with pytest.raises(InvalidQueueName):
        await client.enqueue_many([Task("x"), Task("y")], queue=bad)
    assert await raw.cmd("SISMEMBER", "asynq:queues", bad) == 0
    assert await raw.cmd("EXISTS", f"asynq:{{{bad}}}:t:bad-queue-task") == 0
    assert await raw.cmd("EXISTS", f"asynq:{{{bad}}}:pending") == 0


async def test_payload_encodings(client: Client, raw: RawRedis, unique_queue: str) -> None:
    k = q(unique_queue)

    async def stored(info: TaskInfo) -> bytes:
        return decode_task_message((await hgetall(raw, k(f"t:{info.id}")))["msg"]).payload

    model = await client.enqueue(
        Task("email", EmailPayload.model_validate({"to": 123, "from": 456})), queue=unique_queue
    )
    assert await stored(model) == b'{"to":123,"from":456}'
    assert model.payload == b'{"to":123,"from":456}'

    as_dict = await client.enqueue(Task("d", {"a": 1, "b": [1, 2], "s": "é"}), queue=unique_queue)
    assert await stored(as_dict) == '{"a":1,"b":[1,2],"s":"é"}'.encode()
    assert json.loads(await stored(as_dict)) == {"a": 1, "b": [1, 2], "s": "é"}

    raw_bytes = bytes(range(256))
    as_bytes = await client.enqueue(Task("b", raw_bytes), queue=unique_queue)
    assert await stored(as_bytes) == raw_bytes

    empty = await client.enqueue(Task("e"), queue=unique_queue)
    assert await stored(empty) == b""

    with pytest.raises(InvalidTaskError):
        Task("x", {"not": {1, 2}})  # a set is not JSON


async def test_enqueue_many_returns_one_outcome_per_task_in_order(
    client: Client, raw: RawRedis, unique_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = q(unique_queue)
    taken = await client.enqueue(Task("first", b"x"), queue=unique_queue, task_id="taken-id")
    ids = iter(["many-1", "taken-id", "many-3", "many-4"])
    monkeypatch.setattr(asynq_aio._options, "new_task_id", lambda: next(ids))

    outcomes = await client.enqueue_many(
        [Task("m", b"1"), Task("m", b"2"), Task("m", b"3"), Task("m", b"4")], queue=unique_queue
    )

    assert len(outcomes) == 4
    assert isinstance(outcomes[0], TaskInfo)
    assert isinstance(outcomes[1], TaskIDConflictError)
    assert isinstance(outcomes[2], TaskInfo)
    assert isinstance(outcomes[3], TaskInfo)
    assert [o.id for o in outcomes if isinstance(o, TaskInfo)] == ["many-1", "many-3", "many-4"]
    assert [o.payload for o in outcomes if isinstance(o, TaskInfo)] == [b"1", b"3", b"4"]
    assert all(o.state == TaskState.PENDING for o in outcomes if isinstance(o, TaskInfo))
    assert await raw.cmd("LRANGE", k("pending"), 0, -1) == [
        b"many-4",
        b"many-3",
        b"many-1",
        taken.id.encode(),
    ]
    # the conflicting task did not overwrite the one that held the ID
    fields = await hgetall(raw, k("t:taken-id"))
    assert decode_task_message(fields["msg"]).type == "first"

    assert await client.enqueue_many([], queue=unique_queue) == []


async def test_enqueue_registers_the_queue(client: Client, raw: RawRedis, unique_queue: str) -> None:
    assert await raw.cmd("SISMEMBER", "asynq:queues", unique_queue) == 0
    await client.enqueue(Task("x"), queue=unique_queue)
    assert await raw.cmd("SISMEMBER", "asynq:queues", unique_queue) == 1
    other = unique_queue + "_many"
    await client.enqueue_many([Task("x")], queue=other)
    assert await raw.cmd("SISMEMBER", "asynq:queues", other) == 1


async def test_a_failed_queue_listing_does_not_fail_the_stored_enqueue_and_is_tried_again(
    client: Client, raw: RawRedis, unique_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The queue's listing in asynq:queues goes beside the write: when it fails (here asynq:queues is
    not a set, so SADD answers WRONGTYPE), the task is still stored and the enqueue succeeds, the
    failure is logged, and the next enqueue into the queue lists it."""
    members = await raw.cmd("SMEMBERS", "asynq:queues")
    await raw.cmd("DEL", "asynq:queues")
    await raw.cmd("SET", "asynq:queues", "not a set")
    try:
        with caplog.at_level(logging.WARNING, logger="asynq_aio.client"):
            info = await client.enqueue(Task("x"), queue=unique_queue)
        assert await raw.cmd("LRANGE", q(unique_queue)("pending"), 0, -1) == [info.id.encode()]
        assert f"could not add queue(s) {unique_queue} to asynq:queues" in caplog.text
        assert "WRONGTYPE" in caplog.text
    finally:
        await raw.cmd("DEL", "asynq:queues")
        if members:
            await raw.cmd("SADD", "asynq:queues", *members)
    assert await raw.cmd("SISMEMBER", "asynq:queues", unique_queue) == 0
    await client.enqueue(Task("y"), queue=unique_queue)
    assert await raw.cmd("SISMEMBER", "asynq:queues", unique_queue) == 1


async def test_concurrent_first_enqueues_share_one_queue_listing(
    client: Client, raw: RawRedis, unique_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """64 callers enqueueing into a new queue at once list it once, and each returns with it listed."""
    calls: list[list[str]] = []
    listed_at: list[float] = []
    register = client._broker.register_queues

    async def counted(queues: Sequence[str]) -> None:
        calls.append(list(queues))
        await register(queues)
        listed_at.append(time.monotonic())

    monkeypatch.setattr(client._queues, "_register", counted)

    async def one(i: int) -> float:
        await client.enqueue(Task("x", str(i).encode()), queue=unique_queue)
        return time.monotonic()

    # when each call returned, against when the listing's SADD answered (64 concurrent raw reads
    # here once failed inside redis-py 8.0.0's cluster client, in the connect of a new connection
    # whose writer was gone)
    returned = await asyncio.gather(*(one(i) for i in range(64)))
    assert calls == [[unique_queue]]
    assert len(listed_at) == 1 and min(returned) >= listed_at[0]
    assert await raw.cmd("SISMEMBER", "asynq:queues", unique_queue) == 1
    assert await raw.cmd("LLEN", q(unique_queue)("pending")) == 64


async def test_unreachable_redis_raises_redis_unavailable_naming_the_address() -> None:
    start = time.monotonic()
    async with Client(RedisClientOpt(addr="127.0.0.1:1"), retry=RetryPolicy(budget=1)) as c:
        with pytest.raises(RedisUnavailableError, match=re.escape("127.0.0.1:1")):
            await c.enqueue(Task("x"), queue="unreachable")
    assert time.monotonic() - start < 10


async def test_enqueue_script_is_safe_to_run_twice(client: Client, raw: RawRedis, unique_queue: str) -> None:
    """A re-sent enqueue (same script call twice, e.g. after a lost reply) stores one task and
    both sends report success."""
    k = q(unique_queue)
    broker = client._broker

    def request(task_id: str, *, process_at: float | None = None, unique_ttl: int = 0) -> EnqueueRequest:
        msg = new_task_message(
            task_id=task_id,
            task_type="twice",
            payload=task_id.encode(),
            queue=unique_queue,
            max_retry=5,
            timeout_s=60,
            deadline_unix=0,
            unique_key=k(f"unique:twice:{hashlib.md5(task_id.encode()).hexdigest()}") if unique_ttl else "",
        )
        return EnqueueRequest(msg=msg, process_at=process_at, unique_ttl=unique_ttl)

    pending_op = broker.enqueue_op(request("twice-pending"))
    sched_op = broker.enqueue_op(request("twice-sched", process_at=time.time() + 300))
    unique_op = broker.enqueue_op(request("twice-unique", unique_ttl=60))

    replies = await broker.transport.batch([pending_op, pending_op, sched_op, sched_op, unique_op, unique_op])
    assert replies == [[1]] * 6
    # and once more, as a lone re-send
    assert await broker.transport.batch([pending_op]) == [[1]]

    assert sorted(await raw.cmd("LRANGE", k("pending"), 0, -1)) == [b"twice-pending", b"twice-unique"]
    assert await raw.cmd("ZRANGE", k("scheduled"), 0, -1) == [b"twice-sched"]
    lock = k(f"unique:twice:{hashlib.md5(b'twice-unique').hexdigest()}")
    assert await raw.cmd("GET", lock) == b"twice-unique"


async def test_a_re_sent_enqueue_stores_nothing_after_its_task_ran_and_was_deleted(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """The enqueue ran, its reply was lost; before the transport re-sends it, a worker takes the
    task, runs it and its ack deletes the hash (no retention). The re-send must recognise its own
    call (the producer's fence bit), not store the task a second time. For a lone enqueue and a
    batch, with generated and caller-chosen IDs."""
    k = q(unique_queue)
    broker = client._broker

    def request(task_id: str) -> EnqueueRequest:
        msg = new_task_message(
            task_id=task_id, task_type="once", payload=b"", queue=unique_queue, max_retry=5,
            timeout_s=60, deadline_unix=0, unique_key="",
        )  # fmt: skip
        return EnqueueRequest(msg=msg)

    lone = broker.enqueue_op(request(str(uuid.uuid4())))
    chosen = broker.enqueue_op(request("my-own-id"))
    ((batch, _),) = broker.enqueue_ops([request(f"b-{i}") for i in range(3)])
    assert await broker.transport.batch([lone, chosen, batch]) == [[1], [1], [1, 1, 1]]
    # a worker runs all five; the acks delete their hashes
    taken = await broker.dequeue(unique_queue, 10, time.time() + 60)
    assert isinstance(taken, list) and len(taken) == 5
    acks = [broker.ack_op(decode_task_message(d.raw), attempt=d.attempt) for d in taken]
    assert await broker.run(acks) == [1] * 5
    assert await raw.cmd("EXISTS", *(k(f"t:{d.task_id}") for d in taken)) == 0
    # the lost replies' re-sends: the same ops again
    assert await broker.transport.batch([lone, chosen, batch]) == [[1], [1], [1, 1, 1]]
    assert await raw.cmd("LLEN", k("pending")) == 0
    assert await raw.cmd("EXISTS", *(k(f"t:{d.task_id}") for d in taken)) == 0
    # a new call with a caller-chosen ID is not a re-send: it stores the task again, as Go does
    # once the first one is gone
    assert await broker.transport.batch([broker.enqueue_op(request("my-own-id"))]) == [[1]]
    assert await raw.cmd("LRANGE", k("pending"), 0, -1) == [b"my-own-id"]


async def test_the_enqueue_fence_is_a_small_expiring_bitmap(
    client: Client, raw: RawRedis, unique_queue: str
) -> None:
    """One bitmap per producer and queue (a bit per enqueue), with a TTL, outside Go's layout."""
    await client.enqueue_many([Task("f", b"") for _ in range(300)], queue=unique_queue)
    await client.enqueue(Task("f", b""), queue=unique_queue)
    fences = [key for key in await queue_key_names(raw, unique_queue) if ":aio:fence:" in key]
    assert len(fences) == 1
    assert re.fullmatch(re.escape(q(unique_queue)("aio:fence:")) + r"[0-9a-f]{12}:0", fences[0])
    assert await raw.cmd("BITCOUNT", fences[0]) == 301
    assert await raw.cmd("STRLEN", fences[0]) <= 301 // 8 + 1
    assert 590 <= int(await raw.cmd("TTL", fences[0])) <= 600


async def test_ping_answers_for_a_live_redis_and_names_a_dead_one(client: Client) -> None:
    """Client.ping is the readiness probe a web app calls; the protocol layer stays private."""
    await client.ping()
    assert not hasattr(client, "broker")
    async with Client(RedisClientOpt(addr="127.0.0.1:1"), retry=RetryPolicy(budget=0.2)) as dead:
        with pytest.raises(RedisUnavailableError, match=re.escape("127.0.0.1:1")):
            await dead.ping()


async def test_enqueue_timeout_bounds_how_long_an_outage_holds_a_call() -> None:
    """A request path's budget, separate from the worker's 30 s: a dead Redis fails the call
    after about enqueue_timeout seconds."""
    start = time.monotonic()
    async with Client(RedisClientOpt(addr="127.0.0.1:1"), enqueue_timeout=0.5) as c:
        with pytest.raises(RedisUnavailableError):
            await c.enqueue(Task("x"), queue="unreachable")
    assert time.monotonic() - start < 5
    with pytest.raises(ValueError, match="must be positive"):
        Client(RedisClientOpt(addr="127.0.0.1:1"), enqueue_timeout=0)


@pytest.mark.parametrize("group", ["", "g"])
async def test_a_task_stored_late_is_where_its_task_info_says(
    client: Client, raw: RawRedis, unique_queue: str, group: str
) -> None:
    """A task given process_in is "scheduled" in the TaskInfo from the moment its options are read.
    When it reaches Redis after its time (here: read 5 s ago; in life a slow first connection), it
    must still be stored scheduled, as the caller was told, not pending or in its group: the
    forwarder then moves it at once. (A re-check at store time once put such a task in pending
    while its TaskInfo said scheduled.)"""
    k = q(unique_queue)
    options = asynq_aio._options.EnqueueOptions(queue=unique_queue, process_in=0.2, group=group or None)
    req, info = asynq_aio._options.prepare(Task("late", b"x"), options, now=time.time() - 5)
    assert info.state == TaskState.SCHEDULED
    await client._broker.enqueue(req)
    assert await raw.cmd("HGET", k(f"t:{info.id}"), "state") == b"scheduled"
    assert await raw.cmd("ZRANGE", k("scheduled"), 0, -1) == [info.id.encode()]
    assert await raw.cmd("LLEN", k("pending")) == 0
    # the forwarder's next round moves it: it is due
    assert await client._broker.forward(unique_queue) == 1
    where = k(f"g:{group}") if group else k("pending")
    kind = "ZRANGE" if group else "LRANGE"
    assert await raw.cmd(kind, where, 0, -1) == [info.id.encode()]


@pytest.mark.parametrize("now", [1796633923.6305, 1796633923.0005, 1796633923.9995])
async def test_a_scheduled_time_is_stored_as_its_task_info_says_to_the_millisecond(
    client: Client, raw: RawRedis, unique_queue: str, now: float
) -> None:
    """The score keeps milliseconds; the TaskInfo's next_process_at must name that same time, also
    when the requested time falls on half a millisecond (a full run once stored ...953.630 and
    answered ...953.6305, which rounds the other way)."""
    k = q(unique_queue)
    options = asynq_aio._options.EnqueueOptions(queue=unique_queue, process_in=30)
    req, info = asynq_aio._options.prepare(Task("half", b""), options, now=now)
    await client._broker.enqueue(req)
    score = float(await raw.cmd("ZSCORE", k("scheduled"), info.id))
    assert info.next_process_at is not None
    assert score == info.next_process_at.timestamp()
