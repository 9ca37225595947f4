"""Typed task definitions: a task type declared once with its payload model, used by both sides.

::

    class EmailPayload(BaseModel):
        to: str
        subject: str

    send_email = TaskDef("email:send", EmailPayload, queue="notifications", max_retry=5)

    # producer: the payload is type-checked (mypy rejects any other model)
    await send_email.enqueue(client, EmailPayload(to="a@example.com", subject="hi"))

    # worker: the handler receives the validated model
    @send_email.handler(mux)
    async def handle(payload: EmailPayload) -> None: ...

The definition is a thin layer over :class:`Task`: ``send_email.task(payload)`` is a plain ``Task``
with the JSON payload a Go producer would write, and a raw ``Task("email:send", b"...")`` from a Go
program reaches the same handler.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Generic, Unpack

from pydantic import BaseModel, ValidationError

from asynq_aio._client import Client
from asynq_aio._default_client import default_client
from asynq_aio._errors import InvalidTaskError, PayloadValidationError
from asynq_aio._handler import Handler
from asynq_aio._mux import ServeMux
from asynq_aio._options import BatchOptions, Duration, EnqueueOptions, TaskOptions
from asynq_aio._results import decode_result
from asynq_aio._sharding import ShardedQueue
from asynq_aio._task import ModelT, Task, TaskInfo

__all__ = ["TaskDef", "TypedHandler"]

TypedHandler = Callable[[ModelT], Awaitable[Any]]


class TaskDef(Generic[ModelT]):
    """A task type bound to its payload model, with default enqueue options.

    The options given here (queue, max_retry, timeout, retention, unique, group) are defaults; the
    same keyword at :meth:`enqueue` overrides them for one call.
    """

    def __init__(
        self,
        type: str,
        model: type[ModelT],
        *,
        queue: str | ShardedQueue | None = None,
        max_retry: int | None = None,
        timeout: Duration | None = None,
        retention: Duration | None = None,
        unique: Duration | None = None,
        group: str | None = None,
        result_type: builtins.type[Any] | None = None,
    ) -> None:
        if not isinstance(type, str) or not type.strip():
            raise InvalidTaskError("task type must be a non-empty string")
        if not (isinstance(model, builtins.type) and issubclass(model, BaseModel)):
            raise TypeError(f"TaskDef {type!r}: model must be a pydantic model class, got {model!r}")
        self.type = type
        self.model = model
        self.queue = queue
        self.max_retry = max_retry
        self.timeout = timeout
        self.retention = retention
        self.unique = unique
        self.group = group
        self.result_type = result_type
        self._defaults = EnqueueOptions(
            queue=queue, max_retry=max_retry, timeout=timeout, retention=retention, unique=unique, group=group
        )

    def __repr__(self) -> str:
        return f"TaskDef({self.type!r}, {self.model.__name__})"

    # -- producing ----------------------------------------------------------------------------------

    def task(self, payload: ModelT, *, headers: Mapping[str, str] | None = None) -> Task:
        """A plain :class:`Task` of this type (the payload as JSON, field aliases applied)."""
        if not isinstance(payload, self.model):
            raise InvalidTaskError(
                f"{self.type!r} takes a {self.model.__name__} payload, got {type(payload).__name__}"
            )
        return Task(self.type, payload, headers=headers)

    async def enqueue(
        self,
        client: Client,
        payload: ModelT,
        *,
        headers: Mapping[str, str] | None = None,
        **options: Unpack[TaskOptions],
    ) -> TaskInfo:
        """Enqueue one task with ``client``: :meth:`Client.enqueue`'s options, defaulting to the
        definition's."""
        given = EnqueueOptions(**options).over(self._defaults).given()
        return await client.enqueue(self.task(payload, headers=headers), **given)

    async def send(
        self, payload: ModelT, *, headers: Mapping[str, str] | None = None, **options: Unpack[TaskOptions]
    ) -> TaskInfo:
        """Enqueue with the default client (see :func:`asynq_aio.use_client`): the short form of
        :meth:`enqueue`, with the same options. Raises NoDefaultClientError when none is set."""
        return await self.enqueue(default_client(), payload, headers=headers, **options)

    async def enqueue_many(
        self, client: Client, payloads: Sequence[ModelT], **options: Unpack[BatchOptions]
    ) -> list[TaskInfo | Exception]:
        """Enqueue many tasks in one round trip per node; one outcome per payload, in order
        (:meth:`Client.enqueue_many`'s options, defaulting to the definition's)."""
        # a batch takes generated IDs and no unique lock (see Client.enqueue_many)
        defaults = replace(self._defaults, unique=None)
        given = EnqueueOptions(**options).over(defaults).given()
        return await client.enqueue_many([self.task(p) for p in payloads], **given)

    async def wait_result(self, client: Client, info: TaskInfo, *, timeout: float | None = None) -> Any:
        """Wait for the task's result (see :meth:`Client.wait_result`), parsed as this definition's
        ``result_type`` when it has one (a model, ``str``, ``int``, ``list[...]``, ...), else bytes.
        None when the handler returned nothing."""
        data = await client.wait_result(info, timeout=timeout)
        if data is None:
            return None
        return decode_result(data, self.result_type)

    # -- consuming ----------------------------------------------------------------------------------

    def parse(self, task: Task) -> ModelT:
        """The task's payload validated as this definition's model.

        Raises PayloadValidationError (the server archives such a task: retrying cannot fix bad data).
        """
        try:
            return self.model.model_validate_json(task.payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in err['loc']) or '<root>'}: {err['msg']}"
                for err in exc.errors(include_url=False)[:5]
            )
            raise PayloadValidationError(
                f"payload of {task.type!r} does not match {self.model.__name__}: "
                f"{exc.error_count()} error(s): {problems}"
            ) from exc

    def as_handler(self, fn: TypedHandler[ModelT]) -> Handler:
        """Adapt ``async def fn(payload: Model)`` to the Handler protocol (``(task: Task)``)."""

        async def handle(task: Task) -> Any:
            return await fn(self.parse(task))

        handle.__name__ = getattr(fn, "__name__", "handle")
        handle.__qualname__ = getattr(fn, "__qualname__", handle.__name__)
        return handle

    def register(self, mux: ServeMux, fn: TypedHandler[ModelT]) -> None:
        """Route this task type to ``fn`` in ``mux``."""
        mux.handle(self.type, self.as_handler(fn))
        if self.queue is not None:
            mux.expect_queue(self.type, self.queue)

    def handler(self, mux: ServeMux) -> Callable[[TypedHandler[ModelT]], TypedHandler[ModelT]]:
        """Decorator: ``@send_email.handler(mux) async def handle(payload: EmailPayload) -> None``."""

        def register(fn: TypedHandler[ModelT]) -> TypedHandler[ModelT]:
            self.register(mux, fn)
            return fn

        return register
