"""ServeMux: routes a task to its handler by type pattern, adapts typed handlers, applies middleware."""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from asynq_aio._errors import HandlerNotFoundError, PayloadValidationError
from asynq_aio._handler import Handler, Middleware
from asynq_aio._sharding import ShardedQueue
from asynq_aio._task import Task
from asynq_aio.logfmt import context_fields

if TYPE_CHECKING:
    from asynq_aio._taskdef import TaskDef

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
M = TypeVar("M", bound=BaseModel)

log = logging.getLogger("asynq_aio.server")


def typed_handler(fn: Callable[..., Awaitable[Any]]) -> Handler:
    """Adapt ``async def fn(payload: SomeModel)`` (or ``fn(task: Task)``) to the Handler protocol.

    The model is read from the first parameter's annotation; a payload that does not validate raises
    PayloadValidationError, which the server archives at once (retrying cannot fix bad data).
    """
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"handler {fn!r} must be an async function")
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 1:
        raise TypeError(f"handler {fn.__qualname__} must take exactly one parameter (a model or a Task)")
    annotation = _annotation_of(fn, params[0].name)
    if annotation is Task or annotation is inspect.Parameter.empty:
        return fn
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        raise TypeError(
            f"handler {fn.__qualname__}: parameter {params[0].name!r} must be annotated with a "
            f"pydantic model or Task, got {annotation!r}"
        )
    model: type[BaseModel] = annotation

    async def adapted(task: Task) -> Any:
        try:
            payload = model.model_validate_json(task.payload)
        except ValidationError as exc:
            raise PayloadValidationError(
                f"payload of {task.type!r} does not match {model.__name__}: "
                f"{exc.error_count()} error(s): {_short_errors(exc)}"
            ) from exc
        return await fn(payload)

    adapted.__qualname__ = fn.__qualname__
    adapted.__name__ = fn.__name__
    return adapted


def _annotation_of(fn: Callable[..., Awaitable[Any]], name: str) -> Any:
    """The resolved annotation of ``fn``'s parameter ``name`` (Task when it has none).

    Only that parameter's is resolved: under ``from __future__ import annotations`` every
    annotation is a string, and one that names something imported inside an enclosing function
    cannot be resolved from the module (typing.get_type_hints raised NameError for the whole
    handler, even for a plain ``task: Task``). Such a string that names ``Task`` is the Task; any
    other gets an error that says what to do.
    """
    raw = getattr(fn, "__annotations__", {}).get(name, Task)
    if not isinstance(raw, str):
        return raw
    scope = {**getattr(fn, "__globals__", {}), **inspect.getclosurevars(fn).nonlocals}
    try:
        return eval(raw, scope)  # what typing.get_type_hints does for a string annotation
    except NameError:
        if raw.rsplit(".", 1)[-1] == "Task":
            return Task
        raise TypeError(
            f"handler {fn.__qualname__}: cannot resolve the annotation {raw!r} of parameter {name!r} "
            "(with `from __future__ import annotations`, a type imported inside a function is not "
            "visible to the mux): import it at module level"
        ) from None


def _short_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


class ServeMux:
    """Matches a task type against registered patterns; the longest matching prefix wins (Asynq's rule),
    so ``"email:"`` catches ``"email:welcome"`` unless ``"email:welcome"`` is registered itself."""

    def __init__(self) -> None:
        self._routes: dict[str, Handler] = {}
        self._middleware: list[Middleware] = []
        self._resolved: dict[str, Handler | None] = {}
        self._warned_unhandled: set[str] = set()
        # pattern -> the queue its tasks are enqueued to, when a TaskDef registered it
        self._queues: dict[str, str | ShardedQueue] = {}

    def handle(self, pattern: str, handler: Handler) -> None:
        """Route task types starting with ``pattern`` to ``handler`` (a Task-taking coroutine)."""
        if not pattern or not pattern.strip():
            raise ValueError("pattern must be a non-empty string")
        if pattern in self._routes:
            raise ValueError(f"a handler is already registered for {pattern!r}")
        self._routes[pattern] = handler
        self._resolved.clear()

    def expect_queue(self, pattern: str, queue: str | ShardedQueue) -> None:
        """Note that tasks of ``pattern`` go to ``queue`` (a TaskDef with a queue says so when it
        registers), so a worker can serve that queue without being told and warn when it does not."""
        self._queues[pattern] = queue

    def expected_queues(self) -> dict[str, str | ShardedQueue]:
        """Pattern -> queue, for the handlers whose tasks name a queue."""
        return dict(self._queues)

    def task_queues(self) -> list[str]:
        """The queues the handlers' tasks name, sorted: what a worker serves when not told (a
        sharded queue by its logical name, with its count in :meth:`task_shards`)."""
        return sorted({q.name if isinstance(q, ShardedQueue) else q for q in self._queues.values()})

    def task_shards(self) -> dict[str, int]:
        """Logical name -> shard count of the sharded queues the handlers' tasks name: the
        ``Config.shards`` a worker that was not told serves them with."""
        return {q.name: q.shards for q in self._queues.values() if isinstance(q, ShardedQueue)}

    def handle_func(self, pattern: str, fn: Callable[..., Awaitable[Any]]) -> None:
        """Register ``async def fn(task: Task)`` (or a typed ``fn(payload: Model)``)."""
        self.handle(pattern, typed_handler(fn))

    def task(self, pattern: str) -> Callable[[F], F]:
        """Decorator form: ``@mux.task("email:send") async def send(p: EmailPayload) -> None``."""

        def register(fn: F) -> F:
            self.handle_func(pattern, fn)
            return fn

        return register

    def define(
        self, task_type: str, **defaults: Any
    ) -> Callable[[Callable[[M], Awaitable[Any]]], TaskDef[M]]:
        """Decorator-first style: register the handler and get its task definition back.

        ``@mux.define("email:send", queue="emails") async def send_email(p: EmailPayload): ...``
        makes ``send_email`` a :class:`TaskDef` (model read from the handler's annotation; the
        keyword arguments are its defaults), so ``await send_email.send(payload)`` enqueues with
        the default client and ``send_email.enqueue(client, payload)`` with an explicit one."""
        from asynq_aio._taskdef import TaskDef

        def register(fn: Callable[[M], Awaitable[Any]]) -> TaskDef[M]:
            params = list(inspect.signature(fn).parameters.values())
            model = _annotation_of(fn, params[0].name) if len(params) == 1 else None
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise TypeError(
                    f"@define({task_type!r}): {fn.__qualname__} must take one parameter annotated with a "
                    "pydantic model (use mux.task for handlers that take a Task)"
                )
            task_def: TaskDef[M] = TaskDef(task_type, typing.cast("type[M]", model), **defaults)
            task_def.register(self, fn)
            return task_def

        return register

    def use(self, *middleware: Middleware) -> None:
        """Wrap every handler; the first middleware given is the outermost."""
        self._middleware.extend(middleware)
        self._resolved.clear()

    @property
    def patterns(self) -> list[str]:
        """The registered patterns, sorted."""
        return sorted(self._routes)

    def handler_for(self, task_type: str) -> Handler | None:
        """The handler (middleware applied) of the longest pattern ``task_type`` starts with, or None."""
        try:
            return self._resolved[task_type]
        except KeyError:
            pass
        best = max((p for p in self._routes if task_type.startswith(p)), key=len, default=None)
        handler: Handler | None = None
        if best is not None:
            handler = self._routes[best]
            for mw in reversed(self._middleware):
                handler = mw(handler)
        self._resolved[task_type] = handler
        return handler

    async def __call__(self, task: Task) -> Any:
        handler = self.handler_for(task.type)
        if handler is None:
            known = self._known_patterns()
            if task.type not in self._warned_unhandled:
                # once per type: a producer that sends an unknown type keeps sending it, and each
                # failed attempt is logged already
                self._warned_unhandled.add(task.type)
                log.warning(
                    "no handler registered for task type %r (registered: %s): its tasks fail on this "
                    "worker and are retried like any failure",
                    task.type,
                    known,
                    extra=context_fields(),
                )
            raise HandlerNotFoundError(
                f"no handler registered for task type {task.type!r} (registered: {known})"
            )
        return await handler(task)

    def _known_patterns(self, most: int = 20) -> str:
        patterns = self.patterns
        if not patterns:
            return "none"
        shown = ", ".join(repr(p) for p in patterns[:most])
        return shown if len(patterns) <= most else f"{shown} and {len(patterns) - most} more"


def as_handler(obj: ServeMux | Handler | Any) -> Handler:
    """A ServeMux or an async handler as the Handler a Server runs; anything else raises TypeError."""
    if isinstance(obj, ServeMux):
        return obj
    if callable(obj):
        return typing.cast(Handler, obj)
    raise TypeError(f"expected a ServeMux or an async handler, got {type(obj).__name__}")
