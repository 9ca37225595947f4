"""The handler protocol, written down once: a handler takes a Task; middleware wraps a handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asynq_aio.task import Task

Handler = Callable[[Task], Awaitable[None]]
Middleware = Callable[[Handler], Handler]
