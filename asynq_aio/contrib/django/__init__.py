"""Django 6 Tasks on asynq-aio: a ``TASKS`` backend that enqueues, and the worker that runs them.

Settings::

    TASKS = {
        "default": {
            "BACKEND": "asynq_aio.contrib.django.AsynqBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"url": "redis://127.0.0.1:6379/0"},
        }
    }

A ``@task`` function's ``enqueue()`` stores an Asynq task of type ``django:<module path>`` whose
payload is ``{"args": [...], "kwargs": {...}}`` (JSON), through :class:`asynq_aio.sync.Client`, so
Django views need no event loop. ``python -m asynq_aio.contrib.django`` runs the worker: it sets up
Django, serves the backend's queues, imports each task's function by its path and runs it (a sync
function in a thread, a coroutine function awaited). What the function returns is stored as JSON
in the task's result, which ``get_result()`` reads back.

Requires Django 6 (``pip install 'asynq-aio[django]'``, Python >= 3.12); ``import asynq_aio``
never imports it.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import traceback
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

try:
    import django
    from django.db import close_old_connections
    from django.tasks import Task as DjangoTask
    from django.tasks import TaskContext, TaskResult, TaskResultStatus, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued
    from django.utils import timezone
    from django.utils.json import normalize_json
    from django.utils.module_loading import import_string
except ImportError as exc:  # pragma: no cover - exercised where Django is missing
    raise ImportError(
        "asynq_aio.contrib.django needs Django 6 (Python >= 3.12): pip install 'asynq-aio[django]'"
    ) from exc

from asynq_aio._application import App
from asynq_aio._connection import RedisConnOpt, parse_redis_url
from asynq_aio._context import current_task
from asynq_aio._errors import AsynqError, QueueNotFoundError, SkipRetry, TaskNotFoundError
from asynq_aio._inspector import Inspector
from asynq_aio._mux import ServeMux
from asynq_aio._task import Task, TaskInfo, TaskState
from asynq_aio.server.config import Config
from asynq_aio.sync import Client as SyncClient

__all__ = [
    "TASK_TYPE_PREFIX",
    "AsynqBackend",
    "BackendOptions",
    "TaskNotRunnable",
    "run_django_task",
    "worker_app",
]

#: Every Django task's Asynq type is this prefix plus the function's dotted path.
TASK_TYPE_PREFIX = "django:"
#: The header holding when the task was enqueued (ISO 8601, UTC): Asynq's TaskInfo has no such field.
ENQUEUED_AT_HEADER = "django-enqueued-at"
# The stored error text starts with "<exception class path>: "; get_result() reads it back from there.
_ERROR_HEAD = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)+): ")
# At most this much traceback is kept in the task (it is stored again with every retry).
_MAX_TRACEBACK = 8000


class BackendOptions(BaseModel):
    """``TASKS[alias]["OPTIONS"]``: validated when the backend is created, so a typo fails at the
    first use of the backend and names the key, instead of being ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="redis://, rediss://, redis-cluster://h1:p1,h2:p2 or redis-sentinel:// URL")
    queue_map: dict[str, str] = Field(
        default_factory=dict, description="Django queue_name -> Asynq queue (default: the same name)"
    )
    max_retry: int | None = Field(default=None, ge=0, description="Asynq's default (25) when None")
    timeout: float | None = Field(default=None, gt=0, description="seconds per attempt (Asynq: 30 min)")
    retention: float = Field(
        default=86400.0, ge=0, description="seconds a finished task (and its result) stays readable"
    )
    enqueue_timeout: float = Field(default=5.0, gt=0, description="most an enqueue rides out Redis trouble")

    def connection(self) -> RedisConnOpt:
        """The Redis connection options of ``url``."""
        return parse_redis_url(self.url)


_clients: dict[tuple[str, float], SyncClient] = {}
_clients_lock = threading.Lock()


def _shared_client(options: BackendOptions) -> SyncClient:
    """One sync client per (url, enqueue_timeout) per process. Django makes a backend instance per
    thread (its connection handler is thread-local), and each sync client owns a thread and a pool."""
    key = (options.url, options.enqueue_timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None or client.closed:
            client = SyncClient(options.connection(), enqueue_timeout=options.enqueue_timeout)
            _clients[key] = client
        return client


class AsynqBackend(BaseTaskBackend):  # type: ignore[misc]  # Django is untyped (Any) where mypy runs
    """A Django Tasks backend that stores tasks in Asynq queues.

    ``run_after`` becomes ``process_at``. Priority is not supported: Asynq orders work by queue
    (weights and strict priority between queues), not by a number on each task, so a task with a
    priority other than 0 is refused with ``InvalidTask`` (Django's contract for
    ``supports_priority = False``); use separate queues instead.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = False

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        super().__init__(alias, params)
        try:
            self.settings = BackendOptions.model_validate(self.options)
        except ValidationError as exc:
            raise InvalidTask(f"TASKS[{alias!r}]['OPTIONS'] is invalid: {exc}") from exc

    @property
    def client(self) -> SyncClient:
        """The process's sync client for this backend's Redis (created on first use)."""
        return _shared_client(self.settings)

    def asynq_queue(self, queue_name: str) -> str:
        """The Asynq queue that a Django ``queue_name`` maps to."""
        return self.settings.queue_map.get(queue_name, queue_name)

    def asynq_queues(self) -> list[str]:
        """The Asynq queues of this backend's ``QUEUES`` (what its worker serves)."""
        return sorted({self.asynq_queue(q) for q in self.queues})

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Store the call as an Asynq task and return its READY TaskResult (its ID is the task ID)."""
        self.validate_task(task)
        now = timezone.now()
        result = TaskResult(
            task=task,
            id=str(uuid.uuid4()),
            status=TaskResultStatus.READY,
            enqueued_at=now,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )  # normalises args and kwargs to JSON types, raising for what JSON cannot hold
        payload = {"args": result.args, "kwargs": result.kwargs}
        run_after = task.run_after
        if run_after is not None and timezone.is_naive(run_after):
            run_after = timezone.make_aware(run_after)  # USE_TZ=False: local time, as Django means it
        self.client.enqueue(
            Task(
                TASK_TYPE_PREFIX + task.module_path,
                payload,
                headers={ENQUEUED_AT_HEADER: now.astimezone(UTC).isoformat()},
            ),
            queue=self.asynq_queue(task.queue_name),
            task_id=result.id,
            process_at=run_after,
            max_retry=self.settings.max_retry,
            timeout=self.settings.timeout,
            retention=self.settings.retention or None,
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> Any:
        """The task's state, errors and return value, read from Asynq. Raises
        TaskResultDoesNotExist for an unknown ID, one whose retention is over, or a task that is
        not a Django task."""
        info = self._find(result_id)
        if info is None or not info.type.startswith(TASK_TYPE_PREFIX):
            raise TaskResultDoesNotExist(result_id)
        path = info.type.removeprefix(TASK_TYPE_PREFIX)
        try:
            task = import_string(path)
        except ImportError as exc:
            raise TaskResultDoesNotExist(
                f"{result_id}: its function {path!r} cannot be imported: {exc}"
            ) from exc
        if not isinstance(task, DjangoTask):
            raise TaskResultDoesNotExist(f"{result_id}: {path!r} is not a Django task")
        return _result_of(info, task, self.alias)

    def _find(self, task_id: str) -> TaskInfo | None:
        queues = self.asynq_queues()

        async def look(insp: Inspector) -> TaskInfo | None:
            if not queues:  # QUEUES=[] allows any queue: ask them all
                try:
                    return await insp.find_task(task_id)
                except TaskNotFoundError:
                    return None
            for queue in queues:
                try:
                    return await insp.get_task_info(queue, task_id)
                except (TaskNotFoundError, QueueNotFoundError):
                    continue
            return None

        return self.client.inspect(look)

    def check(self, **kwargs: Any) -> list[Any]:
        """Django's system checks: nothing beyond the options, validated at creation."""
        return []


_STATUS = {
    TaskState.PENDING: "READY",
    TaskState.SCHEDULED: "READY",
    TaskState.AGGREGATING: "READY",
    TaskState.RETRY: "READY",
    TaskState.ACTIVE: "RUNNING",
    TaskState.COMPLETED: "SUCCESSFUL",
    TaskState.ARCHIVED: "FAILED",
}


def _result_of(info: TaskInfo, task: Any, alias: str) -> Any:
    """A Django TaskResult from an Asynq TaskInfo."""
    try:
        payload = json.loads(info.payload)
        args, kwargs = list(payload["args"]), dict(payload["kwargs"])
    except (ValueError, KeyError, TypeError):
        args, kwargs = [], {}  # a payload the worker archives: the error says why
    status = TaskResultStatus(_STATUS[info.state])
    finished = info.completed_at if info.state is TaskState.COMPLETED else None
    if info.state is TaskState.ARCHIVED:
        finished = info.last_failed_at
    ran = info.state in (TaskState.ACTIVE, TaskState.COMPLETED, TaskState.ARCHIVED)
    attempts = info.retried + (1 if ran else 0)
    enqueued = info.headers.get(ENQUEUED_AT_HEADER)
    result = TaskResult(
        task=task.using(queue_name=_django_queue(task, info.queue)),
        id=info.id,
        status=status,
        enqueued_at=datetime.fromisoformat(enqueued) if enqueued else None,
        started_at=None,  # Asynq does not record when an attempt started
        last_attempted_at=finished or info.last_failed_at,
        finished_at=finished,
        args=args,
        kwargs=kwargs,
        backend=alias,
        errors=[_error_of(info.last_err)] if info.last_err else [],
        # Asynq does not record which worker ran an attempt: one anonymous entry per attempt, so
        # TaskResult.attempts is right
        worker_ids=["asynq-aio"] * attempts,
    )
    if info.state is TaskState.COMPLETED:
        value = json.loads(info.result) if info.result else None
        object.__setattr__(result, "_return_value", value)
    return result


def _django_queue(task: Any, asynq_queue: str) -> str:
    """The Django queue_name that maps to ``asynq_queue`` (the task's own when several do)."""
    backend = task_backends[task.backend]
    if not isinstance(backend, AsynqBackend) or backend.asynq_queue(task.queue_name) == asynq_queue:
        return str(task.queue_name)
    names = sorted(q for q in backend.queues if backend.asynq_queue(q) == asynq_queue)
    return names[0] if names else asynq_queue


def _error_of(text: str) -> Any:
    """A TaskError from the stored error text (``<class path>: <message>`` then the traceback);
    errors raised by asynq-aio itself (a timeout, a cancel) have no class path and become AsynqError."""
    head = _ERROR_HEAD.match(text)
    path = head.group(1) if head else f"{AsynqError.__module__}.{AsynqError.__qualname__}"
    return TaskError(exception_class_path=path, traceback=text)


# -- the worker ------------------------------------------------------------------------------------


class TaskNotRunnable(SkipRetry):
    """A Django task the worker cannot start: an unknown function path, something at that path that
    is not a ``@task``, a payload that is not ``{"args": [...], "kwargs": {...}}``, or arguments the
    function does not take. Archived at once: running it again cannot fix it."""


class DjangoTaskError(AsynqError):
    """The task function raised: carries the original's class path, message and traceback as text
    (the original is the ``__cause__``)."""


class DjangoResultError(SkipRetry):
    """The function returned something JSON cannot hold. Its work is done, so it is not run again."""


def _describe(exc: BaseException) -> str:
    """``<class path>: <message>`` and then the traceback: the form get_result() reads back."""
    cls = type(exc)
    tb = "".join(traceback.format_exception(exc))
    if len(tb) > _MAX_TRACEBACK:
        tb = "...\n" + tb[-_MAX_TRACEBACK:]
    return f"{cls.__module__}.{cls.__qualname__}: {exc}\n\n{tb}"


def _not_runnable(message: str) -> TaskNotRunnable:
    """A TaskNotRunnable whose text starts with its class path, as get_result() expects."""
    return TaskNotRunnable(f"{TaskNotRunnable.__module__}.{TaskNotRunnable.__qualname__}: {message}")


def _call_sync(func: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Run a sync task function in a worker thread with Django's per-request DB hygiene: stale
    connections are closed before and after, as Django does around each request."""
    close_old_connections()
    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections()


def _resolve(task: Task) -> tuple[Any, list[Any], dict[str, Any]]:
    """The @task object, args and kwargs of an Asynq task; TaskNotRunnable when any is wrong."""
    path = task.type.removeprefix(TASK_TYPE_PREFIX)
    try:
        obj = import_string(path)
    except ImportError as exc:
        raise _not_runnable(f"cannot import the Django task {path!r}: {exc}") from exc
    if not isinstance(obj, DjangoTask):
        raise _not_runnable(f"{path!r} is a {type(obj).__name__}, not a Django @task")
    try:
        data = json.loads(task.payload)
        args, kwargs = data["args"], data["kwargs"]
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise TypeError("args must be a list and kwargs an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise _not_runnable(
            f'the payload of {path!r} is not {{"args": [...], "kwargs": {{...}}}} JSON: {exc}'
        ) from exc
    return obj, args, kwargs


async def run_django_task(task: Task) -> bytes:
    """The handler of every ``django:`` task: run the function the type names with the payload's
    args and kwargs, and return its value as JSON (stored as the task's result)."""
    obj, args, kwargs = _resolve(task)
    path = obj.module_path
    if obj.takes_context:
        args = [_context(obj), *args]
    try:
        inspect.signature(obj.func).bind(*args, **kwargs)
    except TypeError as exc:
        raise _not_runnable(f"{path!r} does not take these arguments: {exc}") from exc
    try:
        if inspect.iscoroutinefunction(obj.func):
            value = await obj.func(*args, **kwargs)
        else:
            value = await anyio.to_thread.run_sync(partial(_call_sync, obj.func, args, kwargs))
    except Exception as exc:
        raise DjangoTaskError(_describe(exc)) from exc
    try:
        return json.dumps(normalize_json(value)).encode()
    except (TypeError, ValueError) as exc:
        raise DjangoResultError(
            f"{path!r} returned a {type(value).__name__}, which JSON cannot hold: {exc}"
        ) from exc


def _context(obj: Any) -> Any:
    """The TaskContext a ``takes_context`` task gets: its result as RUNNING, with this attempt counted."""
    ctx = current_task()
    now = timezone.now()
    result = TaskResult(
        task=obj,
        id=ctx.id,
        status=TaskResultStatus.RUNNING,
        enqueued_at=None,
        started_at=now,
        last_attempted_at=now,
        finished_at=None,
        args=[],
        kwargs={},
        backend=obj.backend,
        errors=[],
        worker_ids=["asynq-aio"] * (ctx.retry_count + 1),
    )
    return TaskContext(task_result=result)


def worker_app(backend: str = "default", *, concurrency: int | None = None) -> App:
    """Set up Django (``DJANGO_SETTINGS_MODULE``) and return the worker App for one TASKS backend:
    it serves the Asynq queues of the backend's ``QUEUES``, each with weight 1."""
    django.setup()
    found = task_backends[backend]
    if not isinstance(found, AsynqBackend):
        raise InvalidTask(f"TASKS[{backend!r}] is a {type(found).__name__}, not asynq_aio's AsynqBackend")
    queues = found.asynq_queues()
    if not queues:
        raise InvalidTask(f"TASKS[{backend!r}] needs a QUEUES list for its worker to know what to serve")
    mux = ServeMux()
    mux.handle(TASK_TYPE_PREFIX, run_django_task)
    config = Config(queues=dict.fromkeys(queues, 1), **({"concurrency": concurrency} if concurrency else {}))
    return App(mux, config=config)


def backend_connection(backend: str = "default") -> RedisConnOpt:
    """The Redis connection options of a TASKS backend (for the worker)."""
    found = task_backends[backend]
    if not isinstance(found, AsynqBackend):
        raise InvalidTask(f"TASKS[{backend!r}] is a {type(found).__name__}, not asynq_aio's AsynqBackend")
    return found.settings.connection()
