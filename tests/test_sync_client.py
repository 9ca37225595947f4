"""asynq_aio.sync.Client: the blocking client for code without an event loop (Django and Flask views,
threads, scripts), on a single Redis and on the cluster. It runs the one async Client on a loop
thread of its own, so what is checked here is the hand-over: threads at once, options and errors
passed through unchanged, a dead Redis, close, and a fork after construction."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest
from conftest import RedisTarget
from pydantic import BaseModel
from redis.asyncio import Redis
from workerproc import conn_opt

from asynq_aio import (
    Client,
    Config,
    DuplicateTaskError,
    Inspector,
    InvalidQueueName,
    InvalidTaskError,
    OutgoingTask,
    PayloadTooLargeError,
    RedisUnavailableError,
    ServeMux,
    Server,
    Task,
    TaskDef,
    TaskIDConflictError,
    TaskInfo,
    TaskState,
    parse_redis_url,
)
from asynq_aio._connection import InvalidRedisURL, RedisConnOpt
from asynq_aio._devcluster import find_free_port_base
from asynq_aio.sync import Client as SyncClient
from asynq_aio.sync import ClientClosedError


class Signup(BaseModel):
    user: int


welcome = TaskDef("email:welcome", Signup, queue="unused-default", max_retry=3)


def opt(target: RedisTarget) -> RedisConnOpt:
    return conn_opt(target.kind, target.url, target.addrs)


@contextmanager
def sync_client(target: RedisTarget, **kwargs: Any) -> Iterator[SyncClient]:
    with SyncClient(opt(target), **kwargs) as c:
        yield c


def inspect(target: RedisTarget, fn: Any) -> Any:
    """Run ``await fn(inspector)`` with an Inspector of its own (not the client under test)."""

    async def go() -> Any:
        async with Inspector(opt(target)) as insp:
            return await fn(insp)

    return asyncio.run(go())


def test_eight_threads_at_once_store_every_task_exactly_once(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    per_thread = 50
    start = threading.Barrier(8)

    def produce(n: int) -> list[str]:
        start.wait()
        return [
            c.enqueue(Task("t:n", {"thread": n, "i": i}), queue=unique_queue).id for i in range(per_thread)
        ]

    with sync_client(redis_target) as c, ThreadPoolExecutor(8) as pool:
        ids = [i for batch in pool.map(produce, range(8)) for i in batch]
    assert len(ids) == 8 * per_thread
    assert len(set(ids)) == len(ids)
    stored = inspect(redis_target, lambda i: i.list_pending_tasks(unique_queue, size=1000))
    assert sorted(t.id for t in stored) == sorted(ids)
    payloads = sorted((t.payload for t in stored), key=bytes)
    assert len(set(payloads)) == len(payloads)  # each (thread, i) once: no task stored twice


def test_options_and_their_errors_are_the_async_clients(redis_target: RedisTarget, unique_queue: str) -> None:
    with sync_client(redis_target) as c:
        later = c.enqueue(Task("t:later"), queue=unique_queue, process_in=3600, max_retry=2)
        assert later.state is TaskState.SCHEDULED and later.queue == unique_queue

        once = c.enqueue(Task("t:once", {"k": 1}), queue=unique_queue, unique=60)
        with pytest.raises(DuplicateTaskError):
            c.enqueue(Task("t:once", {"k": 1}), queue=unique_queue, unique=60)

        fixed = c.enqueue(Task("t:fixed"), queue=unique_queue, task_id="order-17")
        with pytest.raises(TaskIDConflictError):
            c.enqueue(Task("t:fixed"), queue=unique_queue, task_id="order-17")

        typed = c.send(welcome, Signup(user=7), queue=unique_queue)
        assert typed.type == "email:welcome" and typed.max_retry == 3  # the definition's default

        many = c.enqueue_many([Task("t:many", {"i": i}) for i in range(3)], queue=unique_queue)
        assert all(isinstance(r, TaskInfo) for r in many)

    def read(i: Inspector) -> Any:
        return asyncio.gather(
            *(i.get_task_info(unique_queue, t) for t in (later.id, once.id, fixed.id, typed.id))
        )

    got_later, got_once, got_fixed, got_typed = inspect(redis_target, read)
    assert got_later.state is TaskState.SCHEDULED and got_later.max_retry == 2
    assert got_later.next_process_at is not None
    assert got_later.next_process_at > datetime.now().astimezone() + timedelta(minutes=59)
    assert got_once.unique_key
    assert got_fixed.id == "order-17" and got_fixed.state is TaskState.PENDING
    assert got_typed.payload == b'{"user":7}' and got_typed.max_retry == 3


BAD_CALLS: list[tuple[str, Any, dict[str, Any]]] = [
    ("queue with braces", Task("t"), {"queue": "a{b}"}),
    ("negative max_retry", Task("t"), {"max_retry": -1}),
    ("naive process_at", Task("t"), {"process_at": datetime(2030, 1, 1)}),
    (
        "both process_at and process_in",
        Task("t"),
        {"process_at": datetime.now().astimezone(), "process_in": 5},
    ),
    ("not a Task", "email:send", {}),
    ("payload over the limit", Task("t", b"x" * 2048), {}),
]


@pytest.mark.parametrize(("case", "task", "options"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_a_malformed_call_raises_what_the_async_client_raises(
    single_redis_url: str, unique_queue: str, case: str, task: Any, options: dict[str, Any]
) -> None:
    redis = parse_redis_url(single_redis_url)

    async def async_error() -> BaseException:
        async with Client(redis, max_payload_bytes=1024) as ac:
            try:
                await ac.enqueue(task, **{"queue": unique_queue, **options})
            except Exception as exc:
                return exc
        raise AssertionError(f"{case}: the async client accepted it")

    expected = asyncio.run(async_error())
    with SyncClient(redis, max_payload_bytes=1024) as c, pytest.raises(type(expected)) as got:
        c.enqueue(task, **{"queue": unique_queue, **options})
    assert type(got.value) is type(expected)
    assert str(got.value) == str(expected)
    assert isinstance(expected, InvalidTaskError | InvalidQueueName | PayloadTooLargeError)


def test_bad_construction_is_refused_at_once() -> None:
    with pytest.raises(TypeError, match=r"redis\.asyncio client belongs to another event loop"):
        SyncClient(Redis())  # type: ignore[arg-type]
    with pytest.raises(InvalidRedisURL):
        SyncClient("http://example.com")
    with pytest.raises(ValueError, match="enqueue_timeout must be positive"):
        SyncClient("redis://127.0.0.1:1/0", enqueue_timeout=0)


def test_a_dead_redis_raises_a_clear_error_within_the_enqueue_timeout() -> None:
    port = find_free_port_base(1)  # nothing listens there
    started = time.monotonic()
    with SyncClient(f"redis://127.0.0.1:{port}/0", enqueue_timeout=1) as c:
        with pytest.raises(RedisUnavailableError, match=f"127.0.0.1:{port}"):
            c.enqueue(Task("t"), queue="anything")
        with pytest.raises(RedisUnavailableError):
            c.ping()
    assert time.monotonic() - started < 20  # bounded by enqueue_timeout, not the 30 s default budget


def test_use_after_close_raises_and_close_is_idempotent(single_redis_url: str, unique_queue: str) -> None:
    c = SyncClient(single_redis_url)
    c.enqueue(Task("t"), queue=unique_queue)
    thread = next(t for t in threading.enumerate() if t.name == "asynq-aio-sync-client" and t.is_alive())
    c.close()
    c.close()
    assert c.closed and not thread.is_alive()  # the loop thread stopped with the client
    with pytest.raises(ClientClosedError, match="closed"):
        c.enqueue(Task("t"), queue=unique_queue)
    with pytest.raises(ClientClosedError):
        c.send(welcome, Signup(user=1))
    with SyncClient(single_redis_url) as d:
        d.ping()
    with pytest.raises(ClientClosedError):
        d.ping()


def test_a_call_from_its_own_loop_thread_raises_instead_of_deadlocking(
    single_redis_url: str, unique_queue: str
) -> None:
    seen: list[BaseException] = []
    holder: list[SyncClient] = []

    @contextmanager
    def reentrant_hook(out: OutgoingTask) -> Iterator[None]:
        try:
            holder[0].ping()
        except RuntimeError as exc:
            seen.append(exc)
        yield

    with SyncClient(single_redis_url, enqueue_hooks=[reentrant_hook]) as c:
        holder.append(c)
        c.enqueue(Task("t"), queue=unique_queue)
    assert len(seen) == 1 and "its own loop thread" in str(seen[0])


@pytest.mark.anyio
async def test_it_works_from_a_thread_that_runs_an_event_loop_and_waits_for_results(
    single_redis_url: str, unique_queue: str
) -> None:
    """Called inside a running loop it blocks that loop for the call but works (its own loop does
    the I/O); wait_result hands back what a real worker's handler returned."""
    mux = ServeMux()

    async def shout(task: Task) -> str:
        return task.payload.decode().upper()

    mux.handle_func("shout", shout)
    with SyncClient(single_redis_url) as c:
        info = c.enqueue(Task("shout", b"hi"), queue=unique_queue)  # on this test's running loop
        cfg = Config(queues={unique_queue: 1}, concurrency=2)
        with anyio.fail_after(30):
            async with Server(parse_redis_url(single_redis_url), cfg).serve(mux):
                result = await anyio.to_thread.run_sync(lambda: c.wait_result(info, timeout=20))
    assert result == b"HI"


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # Python >= 3.12 warns on fork with threads
def test_a_forked_child_gets_its_own_loop_and_the_parent_keeps_working(
    redis_target: RedisTarget, unique_queue: str
) -> None:
    # read_timeout > enqueue_timeout: a parent whose sockets the child disturbed would fail its next
    # enqueue (a lost reply waits read_timeout) instead of quietly retrying.
    base = opt(redis_target).model_copy(update={"read_timeout": 5.0})
    with SyncClient(base, enqueue_timeout=3) as c:
        before = c.enqueue(Task("t:parent"), queue=unique_queue)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                os.close(r)
                child = c.enqueue(Task("t:child"), queue=unique_queue)
                os.write(w, child.id.encode())
                c.close()
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as reader:
            child_id = reader.read().decode()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        after = [c.enqueue(Task("t:parent"), queue=unique_queue) for _ in range(20)]
    stored = inspect(redis_target, lambda i: i.list_pending_tasks(unique_queue, size=100))
    assert {t.id for t in stored} == {before.id, child_id, *(a.id for a in after)}
