"""A state-machine test of the task lifecycle: random sequences of storage operations run against
the real broker and Inspector on the real single Redis, checked after every step against a
pure-Python model of where each task is.

Hypothesis drives enqueue (plain, scheduled, unique, with a clashing ID), dequeue, ack (with and
without retention), fail (retry or archive by the retry budget, as the processor decides),
requeue, forward of due tasks, the janitor, and the Inspector's delete / run / archive, including
the calls the state forbids. After each step the model and Redis must agree on: the count per
state, the exact order of pending (the order tasks will be dequeued), each task's state and retry
count, the all-time processed/failed counters and who holds each unique lock.

Time is the broker's injectable clock: ``time_passes`` moves it forward in steps of ``TICK`` seconds,
so "due" never depends on how fast the machine is.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from asynq_aio import (
    Client,
    DuplicateTaskError,
    FailedPreconditionError,
    Inspector,
    Task,
    TaskIDConflictError,
    parse_redis_url,
)
from asynq_aio._task import TaskInfo, TaskState
from asynq_aio.protocol.broker import Broker, Dequeued
from asynq_aio.protocol.codec import decode_task_message
from asynq_aio.protocol.keys import queue_keys

T = TypeVar("T")

TICK = 1000  # seconds per clock step: far more than a test run lasts, so real time never matters
UNIQUE_TTL = 10**6
PAYLOADS = [b"a", b"b", b"c"]
MAX_RETRY = [0, 1, 2]

# Enough to reach every state and most transitions in a run; bounded for CI (~15 s).
MODEL_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class ModelTask:
    state: TaskState
    max_retry: int
    retried: int = 0
    due: int = 0  # in ticks: scheduled/retry due time, or completed expiry
    score: int = 0  # the exact zset score (unix s) of a scheduled or retry task
    lock: str | None = None  # the unique lock's key, while this task may hold it


class LifecycleModel(RuleBasedStateMachine):
    redis_url = ""  # set by the test before running

    def __init__(self) -> None:
        super().__init__()
        self.queue = f"model_{uuid.uuid4().hex[:10]}"
        self.offset_ticks = 0
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        opt = parse_redis_url(self.redis_url)
        self.client: Client = self.call(_make, lambda: Client(opt))
        self.inspector: Inspector = self.call(_make, lambda: Inspector(opt))
        self.broker = Broker(self.client._broker.transport, clock=self.now)
        self.call(self.broker.register_queues, [self.queue])
        # the model
        self.tasks: dict[str, ModelTask] = {}
        self.pending: list[str] = []  # the Redis list, left to right: dequeue takes from the right
        self.locks: dict[str, str] = {}  # lock key -> owning task ID
        self.processed = 0
        self.failed = 0
        self.created = 0

    # -- plumbing -----------------------------------------------------------------------------------

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.portal.call(fn, *args)

    def now(self) -> float:
        return time.time() + self.offset_ticks * TICK

    def at_tick(self, ticks: int) -> int:
        """A unix time ``ticks`` steps from the current fake now (whole seconds, as stored)."""
        return int(self.now()) + ticks * TICK

    def ids(self, *states: TaskState) -> list[str]:
        return [i for i, t in self.tasks.items() if t.state in states]  # in creation order

    def next_id(self) -> str:
        # Deterministic IDs: hypothesis replays a failing run, so every choice it draws (and the
        # zset tie-break by member) must not depend on random UUIDs.
        self.created += 1
        return f"task-{self.created:04d}"

    def teardown(self) -> None:
        try:
            qk = queue_keys(self.queue)

            async def cleanup() -> None:
                ops = [self.broker.requeue_op(self.queue, i) for i in self.ids(TaskState.ACTIVE)]
                if ops:
                    await self.broker.run(ops)
                await self.inspector.delete_queue(self.queue, force=True)
                assert await self.broker.transport.call("EXISTS", qk.pending, qk.archived) == 0

            self.call(cleanup)
            self.call(self.inspector.aclose)
            self.call(self.client.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)

    # -- producing ----------------------------------------------------------------------------------

    @rule(max_retry=st.sampled_from(MAX_RETRY))
    def enqueue(self, max_retry: int) -> None:
        opts = {"max_retry": max_retry, "task_id": self.next_id()}
        info = self.call(self._enqueue, Task("job", b"x"), opts)
        self.tasks[info.id] = ModelTask(TaskState.PENDING, max_retry)
        self.pending.insert(0, info.id)

    @rule(ticks=st.integers(1, 3), max_retry=st.sampled_from(MAX_RETRY))
    def schedule(self, ticks: int, max_retry: int) -> None:
        at = self.at_tick(ticks)
        when = datetime.fromtimestamp(at, tz=UTC)
        opts = {"process_at": when, "max_retry": max_retry, "task_id": self.next_id()}
        info = self.call(self._enqueue, Task("job", b"x"), opts)
        self.tasks[info.id] = ModelTask(
            TaskState.SCHEDULED, max_retry, due=self.offset_ticks + ticks, score=at
        )

    @rule(payload=st.sampled_from(PAYLOADS), max_retry=st.sampled_from(MAX_RETRY))
    def enqueue_unique(self, payload: bytes, max_retry: int) -> None:
        lock = queue_keys(self.queue).unique("uniq", payload)
        task = Task("uniq", payload)
        if lock in self.locks:
            with pytest.raises(DuplicateTaskError):
                self.call(self._enqueue, task, {"unique": UNIQUE_TTL})
            return
        opts = {"unique": UNIQUE_TTL, "max_retry": max_retry, "task_id": self.next_id()}
        info = self.call(self._enqueue, task, opts)
        assert info.unique_key == lock
        self.tasks[info.id] = ModelTask(TaskState.PENDING, max_retry, lock=lock)
        self.locks[lock] = info.id
        self.pending.insert(0, info.id)

    @precondition(lambda self: bool(self.tasks))
    @rule(data=st.data())
    def enqueue_with_a_taken_id(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(list(self.tasks)))
        with pytest.raises(TaskIDConflictError):
            self.call(self._enqueue, Task("job", b"x"), {"task_id": task_id})

    async def _enqueue(self, task: Task, opts: dict[str, Any]) -> TaskInfo:
        return await self.client.enqueue(task, queue=self.queue, **opts)

    # -- a worker's operations ----------------------------------------------------------------------

    @rule(count=st.integers(1, 3))
    def dequeue(self, count: int) -> None:
        lease_until = self.now() + 30
        got = self.call(self.broker.dequeue, self.queue, count, lease_until)
        assert isinstance(got, list)
        if self.pending:
            assert got, "a non-empty pending list gave nothing"
        expected = list(reversed(self.pending))[: len(got)]
        assert [d.task_id for d in got] == expected
        for d in got:
            self._check_fetched(d)
            self.pending.remove(d.task_id)
            self.tasks[d.task_id].state = TaskState.ACTIVE

    def _check_fetched(self, d: Dequeued) -> None:
        msg = decode_task_message(d.raw)
        assert (msg.id, msg.queue) == (d.task_id, self.queue)
        assert msg.retried == self.tasks[d.task_id].retried

    def _msg_of(self, task_id: str) -> Any:
        fields = self.call(self.broker.task_hash, self.queue, task_id)
        return decode_task_message(fields["msg"])

    @precondition(lambda self: bool(self.ids(TaskState.ACTIVE)))
    @rule(data=st.data(), keep_ticks=st.sampled_from([0, 1, 2]))
    def ack(self, data: st.DataObject, keep_ticks: int) -> None:
        task_id = data.draw(st.sampled_from(self.ids(TaskState.ACTIVE)))
        msg = self._msg_of(task_id)
        msg.retention = keep_ticks * TICK
        self.call(self.broker.run, [self.broker.ack_op(msg)])
        t = self.tasks[task_id]
        self.processed += 1
        self._release_lock(task_id)
        if keep_ticks:
            t.state, t.due = TaskState.COMPLETED, self.offset_ticks + keep_ticks
        else:
            del self.tasks[task_id]

    @precondition(lambda self: bool(self.ids(TaskState.ACTIVE)))
    @rule(data=st.data(), ticks=st.integers(1, 2))
    def fail(self, data: st.DataObject, ticks: int) -> None:
        task_id = data.draw(st.sampled_from(self.ids(TaskState.ACTIVE)))
        t = self.tasks[task_id]
        archive = t.retried >= t.max_retry  # the processor's rule
        retry_at = self.at_tick(ticks)
        op = self.broker.fail_op(self._msg_of(task_id), error="boom", archive=archive, retry_at=retry_at)
        self.call(self.broker.run, [op])
        self.processed += 1
        self.failed += 1
        if archive:
            t.state = TaskState.ARCHIVED  # the unique lock is kept: Asynq's rule
        else:
            t.state, t.retried = TaskState.RETRY, t.retried + 1
            t.due, t.score = self.offset_ticks + ticks, retry_at

    @precondition(lambda self: bool(self.ids(TaskState.ACTIVE)))
    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self.ids(TaskState.ACTIVE)))
        self.call(self.broker.run, [self.broker.requeue_op(self.queue, task_id)])
        self.tasks[task_id].state = TaskState.PENDING
        self.pending.append(task_id)  # the head: next to be dequeued

    @rule(ticks=st.integers(0, 2))
    def time_passes(self, ticks: int) -> None:
        """The clock moves on, then the forwarder and the janitor run, as a server's loops would."""
        self.offset_ticks += ticks
        moved = self.call(self.broker.forward, self.queue)
        due: list[str] = []
        for state in (TaskState.SCHEDULED, TaskState.RETRY):  # scheduled first, each by due time
            ready = [i for i in self.ids(state) if self.tasks[i].due <= self.offset_ticks]
            due += sorted(ready, key=lambda i: (self.tasks[i].score, i))  # ZRANGEBYSCORE order
        assert moved == len(due)
        for i in due:  # each LPUSHed in turn
            self.tasks[i].state = TaskState.PENDING
            self.pending.insert(0, i)

        removed = self.call(self.broker.delete_expired_completed, self.queue)
        expired = [i for i in self.ids(TaskState.COMPLETED) if self.tasks[i].due <= self.offset_ticks]
        assert removed == len(expired)
        for i in expired:
            del self.tasks[i]

    @property
    def _pending_key(self) -> str:
        return queue_keys(self.queue).pending

    # -- the Inspector --------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.tasks))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(list(self.tasks)))
        t = self.tasks[task_id]
        if t.state is TaskState.ACTIVE:
            with pytest.raises(FailedPreconditionError):
                self.call(self.inspector.delete_task, self.queue, task_id)
            return
        self.call(self.inspector.delete_task, self.queue, task_id)
        if t.state is TaskState.PENDING:
            self.pending.remove(task_id)
        self._release_lock(task_id)
        del self.tasks[task_id]

    @precondition(lambda self: bool(self.tasks))
    @rule(data=st.data())
    def run(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(list(self.tasks)))
        t = self.tasks[task_id]
        if t.state not in (TaskState.SCHEDULED, TaskState.RETRY, TaskState.ARCHIVED):
            with pytest.raises(FailedPreconditionError):
                self.call(self.inspector.run_task, self.queue, task_id)
            return
        self.call(self.inspector.run_task, self.queue, task_id)
        t.state = TaskState.PENDING
        self.pending.insert(0, task_id)

    @precondition(lambda self: bool(self.tasks))
    @rule(data=st.data())
    def archive(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(list(self.tasks)))
        t = self.tasks[task_id]
        if t.state not in (TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY):
            with pytest.raises(FailedPreconditionError):
                self.call(self.inspector.archive_task, self.queue, task_id)
            return
        self.call(self.inspector.archive_task, self.queue, task_id)
        if t.state is TaskState.PENDING:
            self.pending.remove(task_id)
        t.state = TaskState.ARCHIVED

    def _release_lock(self, task_id: str) -> None:
        lock = self.tasks[task_id].lock
        if lock is not None and self.locks.get(lock) == task_id:
            del self.locks[lock]

    # -- what must always hold ----------------------------------------------------------------------

    @invariant()
    def counts_per_state_agree(self) -> None:
        info = self.call(partial(self.inspector.get_queue_info, memory=False), self.queue)
        for state in TaskState:
            want = len(self.ids(state))
            assert info.count(state) == want, (state, info.count(state), want)
        assert info.size == len(self.tasks)
        assert (info.processed_total, info.failed_total) == (self.processed, self.failed)

    @invariant()
    def pending_order_agrees(self) -> None:
        stored = self.call(self.broker.transport.call, "LRANGE", self._pending_key, 0, -1)
        assert [x.decode() for x in stored] == self.pending

    @invariant()
    def each_task_agrees(self) -> None:
        async def listed() -> dict[str, TaskInfo]:
            out: dict[str, TaskInfo] = {}
            for state in TaskState:
                if state is TaskState.AGGREGATING:
                    continue  # needs a group; no rule makes groups
                for ti in await self.inspector.list_tasks(self.queue, state, size=1000):
                    out[ti.id] = ti
            return out

        got = self.call(listed)
        assert set(got) == set(self.tasks)
        for task_id, t in self.tasks.items():
            assert got[task_id].state == t.state, task_id
            assert got[task_id].retried == t.retried, task_id

    @invariant()
    def unique_locks_agree(self) -> None:
        async def holders() -> dict[str, str | None]:
            out: dict[str, str | None] = {}
            for p in PAYLOADS:
                lock = queue_keys(self.queue).unique("uniq", p)
                v = await self.broker.transport.call("GET", lock)
                out[lock] = v.decode() if v is not None else None
            return out

        got = self.call(holders)
        for lock, holder in got.items():
            assert holder == self.locks.get(lock), lock


async def _make(factory: Callable[[], T]) -> T:
    """Build a client inside the portal's loop, where its connections will live."""
    return factory()


def test_task_lifecycle_matches_the_model(single_redis_url: str) -> None:
    LifecycleModel.redis_url = single_redis_url
    run_state_machine_as_test(LifecycleModel, settings=MODEL_SETTINGS)
