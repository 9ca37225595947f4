"""The handler protocol, written down once: a handler takes a Task and may return its result
(see _results.py); middleware wraps a handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asynq_aio._task import Task

Handler = Callable[[Task], Awaitable[Any]]
Middleware = Callable[[Handler], Handler]
