"""A blocking Client for code without an event loop: Django and Flask views, scripts, threads.

It is not a second client. Each :class:`Client` runs one :class:`asynq_aio.Client` on an event
loop of its own, in a daemon thread, and hands every call to it: the same options, errors,
coalescing, hooks and durability, and the same bytes in Redis. A call blocks the calling thread
until the async client has answered, and many threads may call at once (their enqueues share
round trips, as concurrent coroutines do)::

    client = asynq_aio.sync.Client("redis://127.0.0.1:6379/0", enqueue_timeout=5)
    info = client.enqueue(Task("email:send", {"to": 42}), queue="emails")
    info = client.send(send_email, EmailPayload(to=42))  # a TaskDef and its payload model

After ``os.fork()`` (gunicorn, uWSGI, Celery-style preforking) the child does not inherit a working
loop thread: threads do not survive a fork. The child's first call starts a fresh loop thread
with fresh connections; the parent's are left untouched, because closing a socket the parent still
reads would corrupt its replies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from asynq_aio._client import DEFAULT_MAX_PAYLOAD, Durability, EnqueueHook
from asynq_aio._client import Client as AsyncClient
from asynq_aio._connection import (
    RedisClientOpt,
    RedisClusterClientOpt,
    RedisConnOpt,
    RedisSentinelOpt,
    RetryPolicy,
    parse_redis_url,
)
from asynq_aio._errors import AsynqError
from asynq_aio._inspection import CancelOutcome
from asynq_aio._inspector import Inspector
from asynq_aio._options import BatchOptions, TaskOptions
from asynq_aio._task import ModelT, Task, TaskInfo
from asynq_aio._taskdef import TaskDef

__all__ = ["Client", "ClientClosedError"]

T = TypeVar("T")

# How long close() waits for the loop thread to finish closing connections. The async client's
# aclose() already bounds the wait for writes in flight (CLOSE_GRACE, 5 s); this is a backstop.
_CLOSE_JOIN = 15.0


class ClientClosedError(AsynqError, RuntimeError):
    """A call on a sync Client after close(): its loop thread and connections are gone."""


@dataclass(slots=True)
class _Loop:
    """One event loop thread and the async objects that live on it (they belong to this loop only)."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    client: AsyncClient
    inspector: Inspector | None = None
    # the calls handed to this loop and not yet answered; close() cancels those the loop never ran
    pending: set[concurrent.futures.Future[Any]] = field(default_factory=set)
    stopped: bool = False


_instances: weakref.WeakSet[Client] = weakref.WeakSet()
# A forked child's copies of its parent's loops, kept alive and never touched. Their epoll instance
# and sockets are shared with the parent: if the garbage collector finalised them here, closing
# the loop (or a connection) would unregister the parent's own sockets from that shared epoll, and
# the parent's loop would stop hearing replies and wake-ups.
_inherited: list[_Loop] = []


def _after_fork_in_child() -> None:
    for inst in list(_instances):
        inst._forget_parent_loop()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Client:
    """A thread-safe, blocking :class:`asynq_aio.Client`. Create one per process (at import or
    app start) and share it: each instance owns a thread and a connection pool.

    ``redis`` is connection options or a URL (``redis://``, ``redis-cluster://h1:p1,h2:p2``, ...);
    the keywords are the async client's. A borrowed ``redis.asyncio`` client is refused: it belongs
    to the caller's event loop, which this client cannot use.
    """

    def __init__(
        self,
        redis: RedisConnOpt | str,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        retry: RetryPolicy | None = None,
        enqueue_hooks: Sequence[EnqueueHook] = (),
        durable: bool | Durability = False,
        enqueue_timeout: float | None = None,
    ) -> None:
        if isinstance(redis, str):
            redis = parse_redis_url(redis)
        if not isinstance(redis, RedisClientOpt | RedisClusterClientOpt | RedisSentinelOpt):
            raise TypeError(
                "asynq_aio.sync.Client takes connection options or a redis:// URL, not a "
                f"{type(redis).__name__}: a redis.asyncio client belongs to another event loop"
            )
        if enqueue_timeout is not None and enqueue_timeout <= 0:
            raise ValueError(f"enqueue_timeout must be positive, got {enqueue_timeout!r}")
        self._redis: RedisConnOpt = redis
        self._kwargs: dict[str, Any] = {
            "max_payload_bytes": max_payload_bytes,
            "retry": retry,
            "enqueue_hooks": list(enqueue_hooks),
            "durable": durable,
            "enqueue_timeout": enqueue_timeout,
        }
        self._retry = retry
        self._lock = threading.Lock()
        self._loop: _Loop | None = None
        self._closed = False
        _instances.add(self)
        # Start now, so a bad option fails here and not at the first enqueue in a request.
        self._running()

    # -- the loop thread ----------------------------------------------------------------------------

    def _running(self) -> _Loop:
        """The live loop thread, started on first use (and again in a forked child)."""
        current = self._loop
        if current is not None:
            return current
        with self._lock:
            if self._closed:
                raise ClientClosedError("this asynq_aio.sync.Client is closed")
            if self._loop is None:
                self._loop = self._start()
            return self._loop

    def _start(self) -> _Loop:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        thread = threading.Thread(target=run, name="asynq-aio-sync-client", daemon=True)
        thread.start()
        ready.wait()

        async def build() -> AsyncClient:
            return AsyncClient(self._redis, **self._kwargs)

        try:
            client = asyncio.run_coroutine_threadsafe(build(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CLOSE_JOIN)
            raise
        return _Loop(loop=loop, thread=thread, client=client)

    def _forget_parent_loop(self) -> None:
        """In a forked child: the loop thread did not survive the fork, and its sockets are the
        parent's. Drop them without closing anything; the next call starts afresh."""
        self._lock = threading.Lock()  # the parent's may have been held by a thread that is gone
        if self._loop is not None:
            _inherited.append(self._loop)
        self._loop = None

    def _call(self, make: Callable[[_Loop], Coroutine[Any, Any, T]]) -> T:
        """Run ``make(loop)`` on the loop thread and wait for it; its exception is raised here as is."""
        state = self._running()
        if threading.get_ident() == state.thread.ident:
            raise RuntimeError(
                "asynq_aio.sync.Client was called from its own loop thread (from an enqueue hook?): "
                "it would wait for itself forever; use the async asynq_aio.Client there"
            )
        coro = make(state)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, state.loop)
        except RuntimeError:  # the loop closed between _running() and here: close() won the race
            coro.close()
            raise ClientClosedError("this asynq_aio.sync.Client is closed") from None
        state.pending.add(future)
        if state.stopped:  # close() swept the pending calls before this one was added
            future.cancel()
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._closed:
                raise ClientClosedError("this asynq_aio.sync.Client was closed during the call") from None
            raise
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting: do not leave the call running
            raise
        finally:
            state.pending.discard(future)

    def run(self, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Run ``fn(async_client)`` on the loop thread and return its result: for what the async
        client can do that this class does not wrap. ``fn`` must not block."""

        async def go(state: _Loop) -> T:
            return await fn(state.client)

        return self._call(go)

    def inspect(self, fn: Callable[[Inspector], Awaitable[T]]) -> T:
        """Run ``fn(inspector)`` on the loop thread with an :class:`Inspector` on the same Redis
        (opened on first use, closed with this client): task state by ID, queue sizes, ..."""

        async def go(state: _Loop) -> T:
            if state.inspector is None:
                state.inspector = Inspector(self._redis, retry=self._retry)
            return await fn(state.inspector)

        return self._call(go)

    # -- the async client's API, blocking -----------------------------------------------------------

    def enqueue(self, task: Task, **options: Unpack[TaskOptions]) -> TaskInfo:
        """Store ``task`` and return its info: :meth:`asynq_aio.Client.enqueue`, with its options
        and errors (TaskIDConflictError, DuplicateTaskError, InvalidTaskError, RedisUnavailableError, ...)."""
        return self._call(lambda s: s.client.enqueue(task, **options))

    def enqueue_many(
        self, tasks: Sequence[Task], **options: Unpack[BatchOptions]
    ) -> list[TaskInfo | Exception]:
        """:meth:`asynq_aio.Client.enqueue_many`: one outcome per task, in order."""
        return self._call(lambda s: s.client.enqueue_many(tasks, **options))

    def send(
        self,
        task_def: TaskDef[ModelT],
        payload: ModelT,
        *,
        headers: Mapping[str, str] | None = None,
        **options: Unpack[TaskOptions],
    ) -> TaskInfo:
        """Enqueue a typed task: :meth:`TaskDef.enqueue` with this client, the definition's options
        as defaults. The payload must be the definition's model (mypy checks it too)."""
        return self._call(lambda s: task_def.enqueue(s.client, payload, headers=headers, **options))

    def wait_result(
        self, task: TaskInfo | str, *, queue: str | None = None, timeout: float | None = None
    ) -> bytes | None:
        """Block until the task has run and return its result: :meth:`asynq_aio.Client.wait_result`
        (TaskFailedError, TaskNotFoundError, TimeoutError after ``timeout`` seconds)."""
        return self._call(lambda s: s.client.wait_result(task, queue=queue, timeout=timeout))

    def cancel(self, task_id: str, *, queue: str | None = None) -> CancelOutcome:
        """Stop a task by its ID: :meth:`asynq_aio.Client.cancel`."""
        return self._call(lambda s: s.client.cancel(task_id, queue=queue))

    def ping(self) -> None:
        """Check that Redis answers (RedisUnavailableError / ClusterNotReadyError otherwise)."""
        self._call(lambda s: s.client.ping())

    @property
    def max_payload_bytes(self) -> int:
        """The largest payload this client stores (larger ones raise PayloadTooLargeError)."""
        size: int = self._kwargs["max_payload_bytes"]
        return size

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    # -- closing ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Let enqueues in flight finish, close the connections and stop the loop thread. Later
        calls raise ClientClosedError; closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            state, self._loop = self._loop, None
        if state is None:
            return
        if threading.get_ident() == state.thread.ident:
            raise RuntimeError("asynq_aio.sync.Client.close() was called from its own loop thread")

        async def shut() -> None:
            try:
                await state.client.aclose()
            finally:
                if state.inspector is not None:
                    await state.inspector.aclose()

        try:
            asyncio.run_coroutine_threadsafe(shut(), state.loop).result(_CLOSE_JOIN)
        finally:
            state.loop.call_soon_threadsafe(state.loop.stop)
            state.thread.join(_CLOSE_JOIN)
            state.stopped = True
            for future in list(state.pending):
                future.cancel()  # handed over as the loop stopped: it will never run them

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<asynq_aio.sync.Client {self._redis.describe()} ({state})>"
