"""Client: enqueue tasks from async code (web handlers, scripts, other workers)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, replace
from datetime import datetime

from asynq_aio._closing import AsyncClosing
from asynq_aio._coalescer import Coalescer
from asynq_aio._connection import RedisClient, RedisConnOpt, RetryPolicy
from asynq_aio._errors import InvalidTaskError, NotDurableError
from asynq_aio._inspection import CancelOutcome
from asynq_aio._inspector import Inspector
from asynq_aio._options import Duration, EnqueueOptions, prepare, prepare_many
from asynq_aio._registration import QueueRegistry
from asynq_aio._sharding import ShardedQueue
from asynq_aio._task import Task, TaskInfo
from asynq_aio._waiting import ResultWaiter
from asynq_aio.protocol.broker import EnqueueRequest
from asynq_aio.protocol.session import RedisSession

log = logging.getLogger("asynq_aio.client")

# 16 MiB: far above any JSON a task should carry (bulk data belongs in object storage, with its
# URL in the payload), far below Redis' 512 MB string limit, and small enough that a worker with
# 20 slots is not made to hold gigabytes. The worker's Config.max_payload_bytes defaults to the
# same value, so a task this Client accepts is never refused by a default worker.
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024
# Most concurrent enqueues one coalesced write takes (the broker cuts it further into script calls).
ENQUEUE_BATCH = 1024
# How long aclose() lets writes in flight, and those queued behind them, finish.
CLOSE_GRACE = 5.0


@dataclass(slots=True)
class OutgoingTask:
    """What an enqueue hook sees of one task about to be stored.

    ``headers`` starts as a copy of ``task.headers`` and is what gets stored: a hook adds to it
    (e.g. a trace context) without changing the caller's Task, which may be enqueued again.
    """

    task: Task
    queue: str
    task_id: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Durability:
    """What ``Client(durable=...)`` waits for after each write: ``replicas`` replicas of the node
    that stored the task confirm it, within ``timeout`` seconds (keep it below the connection's
    ``read_timeout``). See docs/reliability.md for what it protects against and what it costs."""

    replicas: int = 1
    timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("Durability.replicas must be at least 1")
        if self.timeout <= 0:
            raise ValueError("Durability.timeout must be positive")


EnqueueHook = Callable[[OutgoingTask], AbstractContextManager[object]]
"""Called once per task before it is written; the context it returns is exited after the write,
with the write's exception if it failed (a tracing span wraps the Redis round trip this way).
A hook must not suppress that exception."""


class Client(AsyncClosing):
    """Enqueues tasks. One per application is enough: it is safe to share between coroutines.

    ``Client(RedisClusterClientOpt(addrs=[...]))`` owns its connections; ``Client(existing_redis)``
    borrows a caller's ``redis.asyncio`` client and leaves it open on close.
    """

    def __init__(
        self,
        redis: RedisConnOpt | RedisClient,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        retry: RetryPolicy | None = None,
        enqueue_hooks: Sequence[EnqueueHook] = (),
        durable: bool | Durability = False,
        enqueue_timeout: float | None = None,
    ) -> None:
        """``durable=True`` (or a :class:`Durability`) makes each enqueue wait until a replica holds
        the task before it returns, and raise :class:`NotDurableError` when none confirms in time:
        an acknowledged enqueue then survives the loss of the master that took it.

        ``enqueue_timeout`` (seconds) is the most a call may spend riding out Redis trouble
        (retrying a lost connection, a failover) before it raises RedisUnavailableError. The
        default, the retry policy's 30 s budget, suits scripts and workers; a web request path
        wants a few seconds, so a Redis outage fails the request instead of hanging it."""
        if enqueue_timeout is not None:
            if enqueue_timeout <= 0:
                raise ValueError(f"enqueue_timeout must be positive, got {enqueue_timeout!r}")
            retry = replace(retry or RetryPolicy(), budget=float(enqueue_timeout))
        self._session = RedisSession.open(redis, retry=retry)
        self._durable: Durability | None = (
            durable if isinstance(durable, Durability) else (Durability() if durable else None)
        )
        self._broker = self._session.broker()
        # Concurrent enqueue() calls share round trips (see coalescer.py). Two writes in flight let
        # the next batch fill while one is on the wire; more split the same load into smaller
        # batches without more throughput. A batch is cut further into script calls by the broker.
        self._batcher: Coalescer[EnqueueRequest, None] = Coalescer(
            self._store_batch, max_batch=ENQUEUE_BATCH, max_inflight=2, solo_below=1
        )
        self._max_payload = max_payload_bytes
        self._results = ResultWaiter(self._session, self._broker)
        self._inspector: Inspector | None = None  # for cancel(): shares this client's connections
        self._queues = QueueRegistry(self._broker.register_queues, log)  # lists queues in asynq:queues
        self._enqueue_hooks: list[EnqueueHook] = list(enqueue_hooks)

    def add_enqueue_hook(self, hook: EnqueueHook) -> None:
        """Run ``hook`` around every later enqueue (after those already added)."""
        self._enqueue_hooks.append(hook)

    async def _store_batch(self, reqs: list[EnqueueRequest]) -> Sequence[Exception | None]:
        """The coalescer's write: a lone task through the single-task call, more in one batch.
        Each caller of a batch gets its own task's outcome (TaskIDConflictError, ...)."""
        if len(reqs) == 1:
            await self._broker.enqueue(reqs[0])  # its error is the caller's (the coalescer hands it over)
            return [None]
        return await self._broker.enqueue_many(reqs)

    async def wait_result(
        self, task: TaskInfo | str, *, queue: str | None = None, timeout: float | None = None
    ) -> bytes | None:
        """Wait until ``task`` (a TaskInfo, or an ID with its ``queue``) has run, and return its
        result: what its handler returned, as stored (None when it returned nothing). Raises
        TaskFailedError when the task was archived, TaskNotFoundError when there is no such task (or it
        finished without a retention before the wait began, leaving nothing to read),
        TimeoutError after ``timeout`` seconds. Wakes on the worker's notification (one shared
        subscription per client); a task run by a Go worker is seen within a second."""
        if isinstance(task, TaskInfo):
            task_id, queue = task.id, queue or task.queue
        else:
            task_id = task
        if not queue:
            raise InvalidTaskError("wait_result needs the task's queue (pass a TaskInfo, or queue=)")
        return await self._results.wait(queue, task_id, timeout)

    async def cancel(self, task_id: str, *, queue: str | None = None) -> CancelOutcome:
        """Stop a task by its ID alone: a running task's handler is cancelled (the task then goes
        to retry, as in Go), a waiting one (pending, scheduled, retry, aggregating) is deleted.
        Raises TaskNotFoundError, or FailedPreconditionError for a finished task or an ID in
        several queues (pass ``queue`` then). See :meth:`Inspector.cancel`."""
        if self._inspector is None:
            self._inspector = Inspector(self._session.client, retry=self._session.retry)
        return await self._inspector.cancel(task_id, queue=queue)

    async def ping(self) -> None:
        """Check that Redis answers (every node of a cluster covers its slots); raises
        RedisUnavailableError / ClusterNotReadyError otherwise. For readiness probes."""
        await self._session.check_ready()

    @property
    def max_payload_bytes(self) -> int:
        """The largest payload this client stores (larger ones raise PayloadTooLargeError)."""
        return self._max_payload

    async def aclose(self) -> None:
        """Let queued enqueues finish (up to CLOSE_GRACE seconds), then close the connections."""
        await self._batcher.aclose(grace=CLOSE_GRACE)
        await self._queues.aclose()
        await self._results.aclose()
        if self._inspector is not None:
            await self._inspector.aclose()  # closes nothing of ours: it wraps our redis-py client
        await self._session.aclose()

    def _open_hooks(self, task: Task, req: EnqueueRequest, info: TaskInfo) -> tuple[TaskInfo, ExitStack]:
        """Enter every enqueue hook for one built task and store the headers they set; the caller
        exits the returned stack after the write, passing the write's error if any."""
        stack = ExitStack()
        if not self._enqueue_hooks:
            return info, stack
        out = OutgoingTask(task=task, queue=req.msg.queue, task_id=req.msg.id, headers=dict(req.msg.headers))
        try:
            for hook in self._enqueue_hooks:
                stack.enter_context(hook(out))
        except BaseException:
            stack.__exit__(*sys.exc_info())
            raise
        req.msg.headers.clear()
        req.msg.headers.update(out.headers)
        return info.model_copy(update={"headers": dict(out.headers)}), stack

    async def enqueue(
        self,
        task: Task,
        *,
        queue: str | ShardedQueue | None = None,
        max_retry: int | None = None,
        timeout: Duration | None = None,
        deadline: datetime | None = None,
        process_at: datetime | None = None,
        process_in: Duration | None = None,
        unique: Duration | None = None,
        task_id: str | None = None,
        retention: Duration | None = None,
        group: str | None = None,
    ) -> TaskInfo:
        """Store ``task`` and return its info. Raises TaskIDConflictError, DuplicateTaskError,
        InvalidTaskError, InvalidQueueName or RedisUnavailableError; on error nothing is stored.
        A :class:`ShardedQueue` as ``queue`` stores it in the queue's next shard in turn (the
        returned info names that shard)."""
        options = EnqueueOptions(
            queue=queue,
            max_retry=max_retry,
            timeout=timeout,
            deadline=deadline,
            process_at=process_at,
            process_in=process_in,
            unique=unique,
            task_id=task_id,
            retention=retention,
            group=group,
        )
        req, info = prepare(task, options, now=time.time(), max_payload=self._max_payload)
        if self._enqueue_hooks:
            info, hooks = self._open_hooks(task, req, info)
            with hooks:
                await self._store_one(req, info)
        else:  # no hook: no ExitStack to enter and leave on every call
            await self._store_one(req, info)
        if log.isEnabledFor(logging.DEBUG):  # no per-enqueue cost unless debugging
            fields = {"task_id": info.id, "task_type": info.type, "queue": info.queue, "state": info.state}
            log.debug("enqueued task %s (%s) in %s", info.id, info.type, info.queue, extra=fields)
        return info

    async def _store_one(self, req: EnqueueRequest, info: TaskInfo) -> None:
        """Write one built task: through the coalescer (concurrent callers share round trips), or in
        durable mode with the replicas' wait; raises that task's error. Its queue is listed in
        asynq:queues beside the write (see _registration.py)."""
        registration = self._queues.start([req.msg.queue])
        if self._durable is None:
            await self._batcher.submit(req)
        else:
            err = (await self._write_many([(req, info)]))[0]
            if err is not None:
                raise err
        await self._queues.settle(registration)

    async def enqueue_many(
        self,
        tasks: Sequence[Task],
        *,
        queue: str | ShardedQueue | None = None,
        max_retry: int | None = None,
        timeout: Duration | None = None,
        deadline: datetime | None = None,
        process_at: datetime | None = None,
        process_in: Duration | None = None,
        retention: Duration | None = None,
        group: str | None = None,
    ) -> list[TaskInfo | Exception]:
        """Enqueue many tasks in one pipelined round trip per node; one outcome per task, in order
        (a TaskInfo, or the error for that task). A :class:`ShardedQueue` as ``queue`` deals the
        tasks out over its shards in turn (still one script call per shard and chunk)."""
        options = EnqueueOptions(
            queue=queue,
            max_retry=max_retry,
            timeout=timeout,
            deadline=deadline,
            process_at=process_at,
            process_in=process_in,
            retention=retention,
            group=group,
        )
        now = time.time()
        built = prepare_many(tasks, options, now=now, max_payload=self._max_payload)
        if self._enqueue_hooks:
            return await self._enqueue_many_hooked(tasks, built)
        errors = await self._store_many(built)
        return [info if err is None else err for (_, info), err in zip(built, errors, strict=True)]

    async def _store_many(self, built: Sequence[tuple[EnqueueRequest, TaskInfo]]) -> list[Exception | None]:
        """Write the tasks, listing their queues in asynq:queues beside the write; one outcome each."""
        registration = self._queues.start([r.msg.queue for r, _ in built])
        errors = await self._write_many(built)
        await self._queues.settle(registration)
        return errors

    async def _write_many(self, built: Sequence[tuple[EnqueueRequest, TaskInfo]]) -> list[Exception | None]:
        """Write the tasks; in durable mode also wait for the replicas, and turn each stored task's
        outcome into a NotDurableError (carrying its info) when too few confirmed."""
        reqs = [r for r, _ in built]
        if self._durable is None:
            return await self._broker.enqueue_many(reqs)
        want = self._durable.replicas
        errors, acked = await self._broker.enqueue_durable(reqs, want, self._durable.timeout)
        if acked >= want:
            return errors
        return [
            NotDurableError(
                f"task {info.id} is stored on the master, but {acked} of {want} replica(s) confirmed it "
                f"within {self._durable.timeout}s: it is lost if that master fails before replicating it",
                info=info,
                acked=acked,
                wanted=want,
            )
            if err is None
            else err
            for (_, info), err in zip(built, errors, strict=True)
        ]

    async def _enqueue_many_hooked(
        self, tasks: Sequence[Task], built: list[tuple[EnqueueRequest, TaskInfo]]
    ) -> list[TaskInfo | Exception]:
        """enqueue_many with hooks: each task's hooks exit with that task's own outcome."""
        opened: list[tuple[EnqueueRequest, TaskInfo, ExitStack]] = []
        try:
            for t, (req, info) in zip(tasks, built, strict=True):
                hooked, stack = self._open_hooks(t, req, info)
                opened.append((req, hooked, stack))
            errors = await self._store_many([(r, info) for r, info, _ in opened])
        except BaseException:
            for _, _, stack in opened:
                stack.__exit__(*sys.exc_info())
            raise
        out: list[TaskInfo | Exception] = []
        for (_, info, stack), err in zip(opened, errors, strict=True):
            if err is None:
                stack.close()
                out.append(info)
            else:
                stack.__exit__(type(err), err, err.__traceback__)
                out.append(err)
        return out
