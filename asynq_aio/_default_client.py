"""The client that ``TaskDef.send`` uses when none is passed: the short, decorator-first style.

An app sets it once (the FastAPI integration does for its lifespan; the testing runner for its
block), and code that only knows a task definition can enqueue without threading a Client through
every call. The explicit style (``task_def.enqueue(client, payload)``) keeps working and is what
code with more than one client should use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from asynq_aio._errors import AsynqError

if TYPE_CHECKING:
    from asynq_aio._client import Client

_stack: list[Client] = []


class NoDefaultClientError(AsynqError, RuntimeError):
    """``send`` was called with no default client set (no app lifespan or ``use_client`` block)."""


@contextmanager
def use_client(client: Client) -> Iterator[Client]:
    """Make ``client`` the default for the duration of the block (blocks nest; the innermost
    wins). Process-wide rather than per context: an app's request handlers run in tasks that did
    not start inside its lifespan, and must still see the client it opened."""
    _stack.append(client)
    try:
        yield client
    finally:
        _stack.remove(client)


def default_client() -> Client:
    """The innermost client set by :func:`use_client`; raises NoDefaultClientError when none is."""
    if not _stack:
        raise NoDefaultClientError(
            "no default client: enqueue with task_def.enqueue(client, payload), or set one with "
            "asynq_aio.use_client(client) (the FastAPI Asynq lifespan and the testing runner do)"
        )
    return _stack[-1]
