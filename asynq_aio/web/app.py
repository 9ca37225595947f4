"""``create_app``: the dashboard as a Starlette ASGI app, to run alone or mount in a host app."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from redis import exceptions as rx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from asynq_aio._connection import RedisClient, RedisConnOpt
from asynq_aio._errors import (
    FailedPreconditionError,
    InvalidQueueName,
    QueueNotFoundError,
    RedisUnavailableError,
    TaskNotFoundError,
)
from asynq_aio._inspector import Inspector
from asynq_aio.web import actions, pages
from asynq_aio.web.context import BadRequest, Dashboard, link
from asynq_aio.web.guard import Refused

__all__ = ["create_app"]

Page = Callable[[Dashboard, Request], Awaitable[Response]]


def create_app(
    source: Inspector | RedisConnOpt | RedisClient,
    *,
    read_only: bool = False,
    refresh_seconds: float = 5.0,
    secret: str | None = None,
    title: str = "asynq-aio",
) -> Starlette:
    """The dashboard app, reading and managing queues through an Inspector.

    ``source`` is an :class:`~asynq_aio.Inspector` the caller owns (the way to share one with a host
    app, which closes it), or connection options / a redis-py client from which the dashboard opens
    its own Inspector on the first request and closes it in its lifespan. A mounted app's lifespan
    is not run by Starlette, so when mounting, pass an Inspector you close yourself.

    ``read_only`` hides every action and refuses their POSTs with 403. ``refresh_seconds`` is how
    often the open page polls for new figures. ``secret`` is the form token; by default a random one
    per process, so several processes behind one address need the same ``secret``.
    """
    if refresh_seconds <= 0:
        raise ValueError(f"refresh_seconds must be positive, got {refresh_seconds}")
    if secret is not None and len(secret) < 16:
        raise ValueError("secret must be at least 16 characters: it is what stops cross-site forms")
    dash = Dashboard(
        source=source,
        read_only=read_only,
        refresh_seconds=refresh_seconds,
        token=secret or secrets.token_urlsafe(32),
        title=title,
    )

    def bind(page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await page(dash, request)

        endpoint.__name__ = page.__name__
        endpoint.__doc__ = page.__doc__
        return endpoint

    def error(status: int, heading: str) -> Callable[[Request, Exception], Awaitable[Response]]:
        async def handler(request: Request, exc: Exception) -> Response:
            message = exc.message if isinstance(exc, Refused) else str(exc) or type(exc).__name__
            return dash.render(
                request,
                "error.html",
                status=exc.status if isinstance(exc, Refused) else status,
                nav="",
                heading=heading,
                message=message,
                back=link(request, "/"),
                live_queue="",
            )

        return handler

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await dash.aclose()

    routes = [
        Route("/", bind(pages.overview), name="overview"),
        Route("/queue", bind(pages.queue), name="queue"),
        Route("/task", bind(pages.task), name="task"),
        Route("/search", bind(pages.search), name="search"),
        Route("/servers", bind(pages.servers), name="servers"),
        Route("/scheduler", bind(pages.scheduler), name="scheduler"),
        Route("/scheduler/history", bind(pages.scheduler_history), name="scheduler_history"),
        Route("/redis", bind(pages.redis), name="redis"),
        Route("/api/stats", bind(pages.api_stats), name="api_stats"),
        Route("/action", bind(actions.post_action), methods=["POST"], name="action"),
        Mount("/static", app=StaticFiles(packages=[("asynq_aio.web", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            Refused: error(403, "Refused"),
            BadRequest: error(400, "Bad request"),
            InvalidQueueName: error(400, "Bad request"),
            ValueError: error(400, "Bad request"),
            QueueNotFoundError: error(404, "Queue not found"),
            TaskNotFoundError: error(404, "Task not found"),
            FailedPreconditionError: error(409, "Not possible now"),
            RedisUnavailableError: error(503, "Redis is unavailable"),
            rx.RedisError: error(503, "Redis error"),
        },
    )
    app.state.dashboard = dash
    return app
