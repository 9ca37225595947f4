"""Testing helpers for applications built on asynq-aio, and the pytest plugin that exposes them.

An application's tests should exercise its handlers the way production runs them: through a real
Redis, a real Server and the real retry/archive rules, rather than by calling handlers directly or
mocking Redis. This module makes that cheap:

- :func:`run_tasks` runs a Server in-process on the test's queues, records every handler run, and
  :meth:`TaskRunner.drain` waits until everything enqueued so far was processed, then reports one
  :class:`TaskOutcome` per run (succeeded, will retry, archived, revoked, with the error).
- :func:`local_redis` and :func:`local_cluster` start a throwaway ``redis-server`` or a 6-node
  Redis Cluster on free ports and remove them afterwards; only the ``redis-server`` binary is needed.
- The pytest plugin (registered as the ``pytest11`` entry point ``asynq_aio.testing``) turns these
  into fixtures, all prefixed ``asynq_`` so they never clash with an application's own:
  ``asynq_redis_server``, ``asynq_devcluster``, ``asynq_redis``, ``asynq_queue``, ``asynq_worker``.

Nothing here is imported by ``asynq_aio`` itself. The marker PYTEST_DONT_REWRITE below keeps pytest
from warning "Module already imported so cannot be rewritten" (an error under
``filterwarnings = error``) when a conftest imports this module before listing it as a plugin; the
module makes no assertions, so it has nothing to rewrite.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import atexit
import enum
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from pydantic import BaseModel
from redis.backoff import NoBackoff
from redis.retry import Retry

from asynq_aio._application import App
from asynq_aio._client import Client
from asynq_aio._connection import RedisClientOpt, RedisClusterClientOpt, RedisConnOpt, parse_redis_url
from asynq_aio._context import TaskContext, current_task
from asynq_aio._default_client import use_client
from asynq_aio._devcluster import DevCluster, find_free_port_base, find_redis_server
from asynq_aio._errors import QueueNotFoundError, TaskNotFoundError
from asynq_aio._handler import Handler
from asynq_aio._inspector import Inspector
from asynq_aio._mux import ServeMux, as_handler
from asynq_aio._sharding import ShardedQueue
from asynq_aio._task import Task, TaskInfo, TaskState
from asynq_aio._taskdef import TaskDef
from asynq_aio.server.config import Config
from asynq_aio.server.served import ServedQueues, is_pattern
from asynq_aio.server.server import Server

__all__ = [
    "LocalCluster",
    "LocalRedis",
    "OutcomeStatus",
    "TaskOutcome",
    "TaskRunner",
    "WorkerFactory",
    "local_cluster",
    "local_redis",
    "run_tasks",
]

#: Environment variable that points the ``asynq_redis`` fixture at an existing Redis instead of a
#: throwaway one (any URL :func:`asynq_aio.parse_redis_url` takes; it is never flushed).
REDIS_URL_ENV = "ASYNQ_TEST_REDIS_URL"

_POLL = 0.02  # seconds between queue-count checks while draining


# -- throwaway Redis servers -------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalRedis:
    """A ``redis-server`` started for the tests: no persistence, its own free port."""

    host: str
    port: int
    db: int = 0

    @property
    def url(self) -> str:
        """This server as a ``redis://`` URL (for code that takes URLs)."""
        return f"redis://{self.host}:{self.port}/{self.db}"

    @property
    def opt(self) -> RedisClientOpt:
        """Connection options for this server."""
        return RedisClientOpt(addr=f"{self.host}:{self.port}", db=self.db)


@dataclass(frozen=True)
class LocalCluster:
    """A Redis Cluster started for the tests (3 masters, 3 replicas) and the DevCluster driving it
    (``cluster.kill_node(port)`` and friends, for failure tests)."""

    addrs: list[str]
    cluster: DevCluster

    @property
    def url(self) -> str:
        """This cluster as a ``redis-cluster://`` URL of its seed nodes."""
        return "redis-cluster://" + ",".join(self.addrs)

    @property
    def opt(self) -> RedisClusterClientOpt:
        """Connection options for this cluster."""
        return RedisClusterClientOpt(addrs=list(self.addrs))


def _pings(host: str, port: int) -> bool:
    client = redis.Redis(
        host=host, port=port, socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextmanager
def local_redis(*, host: str = "127.0.0.1", timeout: float = 10.0) -> Iterator[LocalRedis]:
    """Start a ``redis-server`` on a free port, yield it, and stop it (and delete its directory)."""
    server = find_redis_server()
    port = find_free_port_base(1, host=host)
    data_dir = tempfile.mkdtemp(prefix="asynq-aio-redis-")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no"],
        cwd=data_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)

    atexit.register(stop)  # an interrupted session still stops the server
    try:
        deadline = time.monotonic() + timeout
        while not _pings(host, port):
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {port} exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not answer PING in {timeout:.0f}s")
            time.sleep(0.02)
        yield LocalRedis(host=host, port=port)
    finally:
        stop()
        atexit.unregister(stop)


@contextmanager
def local_cluster(*, replicas: int = 1, masters: int = 3, timeout: float = 60.0) -> Iterator[LocalCluster]:
    """Start a Redis Cluster on free ports (by default 3 masters with a replica each), yield it, and
    stop it and delete its data. Only the ``redis-server`` binary is needed."""
    find_redis_server()  # a clear error with install hints before anything is created
    count = masters * (replicas + 1)
    base_dir = Path(tempfile.mkdtemp(prefix="asynq-aio-cluster-"))
    base = find_free_port_base(count)
    cluster = DevCluster(base_dir, ports=range(base, base + count), replicas=replicas, appendonly=False)

    def stop() -> None:
        cluster.stop(remove_data=True)
        shutil.rmtree(base_dir, ignore_errors=True)

    atexit.register(stop)
    try:
        cluster.start(timeout=timeout)
        yield LocalCluster(addrs=cluster.addrs, cluster=cluster)
    finally:
        stop()
        atexit.unregister(stop)


# -- running tasks in-process --------------------------------------------------------------------------


class OutcomeStatus(enum.StrEnum):
    """What became of a task after one handler run."""

    SUCCEEDED = "succeeded"  #: the handler returned
    RETRY = "retry"  #: it failed and will run again (or already did)
    ARCHIVED = "archived"  #: it failed and was archived (SkipRetry, bad payload, retries used up)
    REVOKED = "revoked"  #: it raised RevokeTask (or was deleted meanwhile): dropped, never retried


@dataclass
class TaskOutcome:
    """One handler run and its result, as stored in Redis once the run was acknowledged."""

    task_id: str
    queue: str
    task: Task
    retried: int  #: how many times the task had been retried before this run
    max_retry: int
    error: BaseException | None  #: what the handler raised (a CancelledError for a timeout)
    status: OutcomeStatus = OutcomeStatus.SUCCEEDED
    error_text: str = ""  #: the error as stored (``TaskInfo.last_err``) for a failed run
    info: TaskInfo | None = None  #: the task as stored after the run (None if it no longer exists)

    @property
    def type(self) -> str:
        """The task's type."""
        return self.task.type

    @property
    def succeeded(self) -> bool:
        """Whether the handler returned (the task succeeded)."""
        return self.status is OutcomeStatus.SUCCEEDED

    @property
    def failed(self) -> bool:
        """Whether the run did not succeed (retry, archived or revoked)."""
        return self.status is not OutcomeStatus.SUCCEEDED


@dataclass
class _Run:
    outcome: TaskOutcome
    settled: bool = False


@dataclass
class TaskRunner:
    """The handle :func:`run_tasks` yields: enqueue, then :meth:`drain` and assert on the outcomes."""

    client: Client
    inspector: Inspector
    server: Server
    queues: list[str]
    wait_for_retries: bool
    _runs: list[_Run] = field(default_factory=list)

    @property
    def outcomes(self) -> list[TaskOutcome]:
        """Every run so far, in the order the handlers finished (settled ones have their status)."""
        return [r.outcome for r in self._runs]

    def outcome(self, task_id: str) -> TaskOutcome:
        """The latest run of ``task_id``; raises KeyError if it has not run."""
        for run in reversed(self._runs):
            if run.outcome.task_id == task_id:
                return run.outcome
        raise KeyError(
            f"task {task_id} has not run (this runner serves the queues {', '.join(self.queues)}: "
            "was it enqueued to one of them, and drained?)"
        )

    async def enqueue(
        self, task: Task | TaskDef[Any], payload: BaseModel | None = None, **options: Any
    ) -> TaskInfo:
        """``client.enqueue`` into the runner's first queue unless ``queue=`` says otherwise.

        With a :class:`TaskDef` and its payload, the definition's defaults apply (queue,
        max_retry, retention, ...), as with ``task_def.enqueue(client, payload)``; its queue must be
        one this runner serves (a mux's TaskDef queues are served by default)."""
        if isinstance(task, TaskDef):
            if payload is None:
                raise TypeError(f"enqueue({task!r}, payload): the payload is missing")
            queue = options.get("queue") or task.queue or self.queues[0]
            names = queue.names if isinstance(queue, ShardedQueue) else (queue,)
            if not set(names) <= set(self.queues):
                raise ValueError(
                    f"{task!r} enqueues to queue {queue!r}, which this runner does not serve "
                    f"({', '.join(self.queues)}): pass queues=[...] to the runner"
                )
            options["queue"] = queue
            return await task.enqueue(self.client, payload, **options)
        if payload is not None:
            raise TypeError("a payload goes with a TaskDef; a Task carries its own")
        options.setdefault("queue", self.queues[0])
        return await self.client.enqueue(task, **options)

    async def drain(self, timeout: float = 10.0) -> list[TaskOutcome]:
        """Wait until the runner's queues have no pending and no active task (and, when retries are
        run, no task waiting for a retry), then return the outcomes of the runs since the last drain.

        Scheduled tasks (``process_in``/``process_at``) are not waited for. Raises TimeoutError if
        the queues are still busy after ``timeout`` seconds (a paused queue, a hung handler).
        """
        idle = 0
        busy: dict[str, int] = {}
        with anyio.move_on_after(timeout) as scope:
            # Two idle readings in a row: the counts of one queue are read in one pipeline but not
            # atomically, so a retry forwarded to pending between two reads could look like nothing.
            while idle < 2:
                busy = await self._busy()
                idle = 0 if busy else idle + 1
                if idle < 2:
                    await anyio.sleep(_POLL)
        if scope.cancelled_caught:
            raise TimeoutError(f"tasks still unfinished after {timeout}s: {busy}")
        return await self._settle()

    async def _busy(self) -> dict[str, int]:
        busy: dict[str, int] = {}
        for q in self.queues:
            try:
                info = await self.inspector.get_queue_info(q, memory=False)
            except QueueNotFoundError:  # nothing was ever enqueued there
                continue
            n = info.pending + info.active + (info.retry if self.wait_for_retries else 0)
            if n:
                busy[q] = n
        return busy

    async def _settle(self) -> list[TaskOutcome]:
        """Give every new run its status, from what Redis holds now that its outcome was written."""
        new = [r for r in self._runs if not r.settled]
        last_run_of = {r.outcome.task_id: r for r in self._runs}
        for run in new:
            o = run.outcome
            run.settled = True
            if o.error is None:
                o.status = OutcomeStatus.SUCCEEDED
            elif last_run_of[o.task_id] is not run:  # it ran again later
                o.status, o.error_text = OutcomeStatus.RETRY, _error_text(o.error)
            else:
                try:
                    o.info = await self.inspector.get_task_info(o.queue, o.task_id)
                except (TaskNotFoundError, QueueNotFoundError):  # RevokeTask drops the task
                    o.status, o.error_text = OutcomeStatus.REVOKED, _error_text(o.error)
                    continue
                o.error_text = o.info.last_err or _error_text(o.error)
                archived = o.info.state is TaskState.ARCHIVED
                o.status = OutcomeStatus.ARCHIVED if archived else OutcomeStatus.RETRY
            if o.error is None:
                try:
                    o.info = await self.inspector.get_task_info(o.queue, o.task_id)
                except (TaskNotFoundError, QueueNotFoundError):
                    o.info = None  # deleted on success: no retention
        return [r.outcome for r in new]

    def _record(self, ctx: TaskContext, task: Task, error: BaseException | None) -> None:
        self._runs.append(
            _Run(
                TaskOutcome(
                    task_id=ctx.id,
                    queue=ctx.queue,
                    task=task,
                    retried=ctx.retry_count,
                    max_retry=ctx.max_retry,
                    error=error,
                )
            )
        )


def _error_text(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _queue_map(queues: Sequence[str] | Mapping[str, int] | None, config: Config | None) -> dict[str, int]:
    if queues is None:
        out = dict(config.queues) if config is not None else {"default": 1}
    elif isinstance(queues, Mapping):
        out = dict(queues)
    elif isinstance(queues, str):
        out = {queues: 1}
    else:
        out = dict.fromkeys(queues, 1)
    patterns = [q for q in out if is_pattern(q)]
    if patterns:
        # the runner sends to and drains named queues; a pattern names none until something matches it
        raise ValueError(
            f"run_tasks serves named queues, not patterns ({', '.join(patterns)}): pass the queues the "
            "test uses, e.g. queues=['tenant:a', 'tenant:b']"
        )
    return out


@asynccontextmanager
async def run_tasks(
    redis: RedisConnOpt | str,
    handler: App | ServeMux | Handler,
    *,
    queues: Sequence[str] | Mapping[str, int] | None = None,
    concurrency: int | None = None,
    retry_delay: float | None = None,
    config: Config | None = None,
) -> AsyncIterator[TaskRunner]:
    """Run ``handler`` in an in-process Server on ``queues`` while the block runs.

    An :class:`~asynq_aio.App` brings its mux and its config (unless ``config`` is given); its
    schedule is not run (a test enqueues what it needs).

    ``retry_delay`` (seconds) replaces the retry backoff and makes :meth:`TaskRunner.drain` also wait
    for retries, so a test sees a task through to success or archive; by default failed tasks wait
    for Asynq's backoff (15 s or more) and drain reports them as ``RETRY``. ``config`` gives every
    other server setting (the default has short shutdown and forward intervals); ``queues``,
    ``concurrency`` (default 4) and ``retry_delay`` override it.
    """
    opt = parse_redis_url(redis) if isinstance(redis, str) else redis
    app_queues = isinstance(handler, App)  # an App's config already names the queues it serves
    if isinstance(handler, App):
        config = config or handler.config
        handler = handler.mux
    qmap = _queue_map(queues, config)
    if isinstance(handler, ServeMux) and not app_queues:
        # the queues the mux's TaskDefs name run too, as in the CLI worker
        for q in handler.task_queues():
            qmap.setdefault(q, 1)
    base = config or Config(shutdown_timeout=1.0, heartbeat_interval=1.0, forward_interval=0.1)
    shards = dict(base.shards)
    if isinstance(handler, ServeMux) and not app_queues:
        shards.update(handler.task_shards())
    shards = {q: n for q, n in shards.items() if q in qmap}
    settings: dict[str, Any] = {**dict(base), "queues": qmap, "shards": shards}
    if concurrency is not None or config is None:
        settings["concurrency"] = concurrency or 4
    if retry_delay is not None:
        delay = float(retry_delay)
        settings["retry_delay_func"] = lambda retried, error, task: delay
    cfg = Config(**settings)  # validated again: a bad queue name fails here, not inside the server
    inner = as_handler(handler)
    async with Client(opt) as client, Inspector(opt) as inspector:
        runner = TaskRunner(
            client=client,
            inspector=inspector,
            server=Server(opt, cfg),
            queues=list(ServedQueues(cfg.queues, cfg.shards)),  # a sharded queue's shards, by name
            wait_for_retries=retry_delay is not None,
        )

        async def recorded(task: Task) -> Any:
            ctx = current_task()
            try:
                value = await inner(task)
            except BaseException as exc:
                runner._record(ctx, task, exc)
                raise
            runner._record(ctx, task, None)
            return value  # the handler's result is stored as in a real worker

        with use_client(client):  # TaskDef.send() in the test uses the runner's client
            async with runner.server.serve(recorded):
                yield runner


# -- the pytest plugin ------------------------------------------------------------------------------

#: ``asynq_worker(mux, queues=..., retry_delay=..., ...)`` -> ``async with`` it to get a TaskRunner.
WorkerFactory = Callable[..., AbstractAsyncContextManager[TaskRunner]]


@pytest.fixture(scope="session")
def asynq_redis_server() -> Iterator[LocalRedis]:
    """A throwaway ``redis-server`` on a free port for the whole session."""
    with local_redis() as server:
        yield server


@pytest.fixture(scope="session")
def asynq_devcluster() -> Iterator[LocalCluster]:
    """A throwaway 6-node Redis Cluster (3 masters, 3 replicas) on free ports for the session."""
    with local_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def asynq_redis(request: pytest.FixtureRequest) -> RedisConnOpt:
    """Where ``asynq_worker`` runs: ``$ASYNQ_TEST_REDIS_URL`` if set, else ``asynq_redis_server``.

    Override it in a conftest to run on the cluster: ``return asynq_devcluster.opt``.
    """
    url = os.environ.get(REDIS_URL_ENV)
    if url:
        return parse_redis_url(url)
    server: LocalRedis = request.getfixturevalue("asynq_redis_server")
    return server.opt


@pytest.fixture
def asynq_queue() -> str:
    """A queue name of this test's own, so tests sharing a Redis never see each other's tasks."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def asynq_worker(asynq_redis: RedisConnOpt, asynq_queue: str) -> WorkerFactory:
    """:func:`run_tasks` bound to ``asynq_redis`` and, unless ``queues=`` is given, ``asynq_queue``."""

    def factory(
        handler: ServeMux | Handler,
        *,
        queues: Sequence[str] | Mapping[str, int] | None = None,
        **options: Any,
    ) -> AbstractAsyncContextManager[TaskRunner]:
        return run_tasks(asynq_redis, handler, queues=queues or [asynq_queue], **options)

    return factory
