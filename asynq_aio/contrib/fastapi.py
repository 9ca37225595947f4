"""FastAPI (and Starlette) integration: one Client per app, and optionally a worker, in the lifespan.

A web app should open its Redis connections once, at startup, and share them between requests: a
``Client`` per request would pay a connection handshake (and, on a cluster, a slot-map fetch) every
time. :class:`Asynq` ties one Client (and, on first use, one Inspector) to the app's lifespan, and
can run a worker in the same process for apps small enough not to need a separate one::

    asynq = Asynq("redis://127.0.0.1:6379/0", mux=mux, config=Config(queues={"emails": 1}))
    app = FastAPI(lifespan=asynq.lifespan)

    @app.post("/signup")
    async def signup(body: Signup, client: AsynqClient) -> dict[str, str]:
        info = await client.enqueue(Task("email:welcome", body), queue="emails")
        return {"task_id": info.id}

Requires FastAPI (``pip install 'asynq-aio[fastapi]'``); ``import asynq_aio`` never imports it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio

try:
    from fastapi import Depends
    from starlette.requests import HTTPConnection
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without fastapi
    raise ImportError("asynq_aio.contrib.fastapi needs FastAPI: pip install 'asynq-aio[fastapi]'") from exc

from asynq_aio._application import App
from asynq_aio._client import Client
from asynq_aio._connection import RedisConnOpt, RetryPolicy, parse_redis_url
from asynq_aio._default_client import use_client
from asynq_aio._handler import Handler
from asynq_aio._inspector import Inspector
from asynq_aio._mux import ServeMux
from asynq_aio.server.config import Config
from asynq_aio.server.server import Server

__all__ = [
    "STATE_KEY",
    "Asynq",
    "AsynqClient",
    "AsynqInspector",
    "get_asynq",
    "get_client",
    "get_inspector",
]

#: The key under which the lifespan state (and ``app.state``) holds the :class:`Asynq` instance.
STATE_KEY = "asynq"

_NOT_RUNNING = (
    "the asynq-aio client exists only while the app's lifespan runs: create the app with "
    "FastAPI(lifespan=asynq.lifespan), or enter `async with asynq.lifespan(app)` in your own lifespan"
)


log = logging.getLogger("asynq_aio.contrib.fastapi")


class Asynq:
    """Owns one :class:`Client` per app (plus an :class:`Inspector` on first use) for the app's
    lifetime, and runs a worker beside the app when given a ``worker`` (an :class:`~asynq_aio.App`:
    mux, config and periodic tasks) or a ``mux`` (with an optional ``config``).

    ``redis`` is connection options or a URL (``redis://``, ``redis-cluster://h1:p1,h2:p2``, ...).
    ``run_worker`` defaults to whether a worker or mux was given; pass ``False`` to keep the handlers
    registered (e.g. for typed enqueueing) but process tasks in a separate ``asynq-aio worker``.
    ``enqueue_timeout`` (5 s; None for the 30 s retry budget) bounds how long a request's enqueue
    rides out a Redis outage before it raises, instead of hanging the request.
    """

    def __init__(
        self,
        redis: RedisConnOpt | str,
        *,
        worker: App | None = None,
        mux: ServeMux | Handler | None = None,
        config: Config | None = None,
        run_worker: bool | None = None,
        retry: RetryPolicy | None = None,
        log_level: str | None = "INFO",
        enqueue_timeout: float | None = 5.0,
    ) -> None:
        self.redis: RedisConnOpt = parse_redis_url(redis) if isinstance(redis, str) else redis
        if worker is not None and (mux is not None or config is not None):
            raise ValueError("give either worker=App(...) or mux= (and config=), not both")
        if worker is None and mux is not None:
            worker = App(mux, config=config)
        self.worker = worker
        self._config = config  # kept as given when there is no worker to run it
        self.run_worker = worker is not None if run_worker is None else run_worker
        if self.run_worker and worker is None:
            raise ValueError("run_worker=True needs a worker (or mux) to run")
        self.retry = retry
        self.log_level = log_level
        self.enqueue_timeout = enqueue_timeout
        self._client: Client | None = None
        self._inspector: Inspector | None = None

    @property
    def mux(self) -> ServeMux | Handler | None:
        """The worker's mux (None without a worker)."""
        return self.worker.mux if self.worker is not None else None

    @property
    def config(self) -> Config | None:
        """The worker's config (without a worker, the ``config`` given, which nothing runs)."""
        return self.worker.config if self.worker is not None else self._config

    @property
    def running(self) -> bool:
        """True between the lifespan's startup and shutdown."""
        return self._client is not None

    @property
    def client(self) -> Client:
        """The app's Client; raises RuntimeError outside the lifespan (a request before startup
        would otherwise open connections nobody closes)."""
        if self._client is None:
            raise RuntimeError(_NOT_RUNNING)
        return self._client

    @property
    def inspector(self) -> Inspector:
        """The app's Inspector, created on first use (most apps only enqueue) and closed at shutdown."""
        if self._client is None:
            raise RuntimeError(_NOT_RUNNING)
        if self._inspector is None:
            self._inspector = Inspector(self.redis, retry=self.retry)
        return self._inspector

    @property
    def server(self) -> Server | None:
        """The worker running beside the app (``None`` without ``run_worker`` or outside the lifespan)."""
        return self.worker.server if self.worker is not None and self._client is not None else None

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[dict[str, Any]]:
        """Open the Client (and start the worker) at startup; stop the worker, then close every
        connection at shutdown. Yields the lifespan state ``{"asynq": self}``; also sets
        ``app.state.asynq`` for code that reaches the app but not the request."""
        if self._client is not None:
            raise RuntimeError("this Asynq instance is already running in a lifespan")
        if self.log_level is not None:
            _show_logs(self.log_level)
        client = Client(self.redis, retry=self.retry, enqueue_timeout=self.enqueue_timeout)
        self._client = client
        state = getattr(app, "state", None)
        if state is not None:
            setattr(state, STATE_KEY, self)
        try:
            with use_client(client):  # TaskDef.send() in routes uses the app's client
                async with self._serving() as state:
                    yield state
        finally:
            self._client = None
            inspector, self._inspector = self._inspector, None
            with anyio.CancelScope(shield=True):
                await client.aclose()
                if inspector is not None:
                    await inspector.aclose()

    @asynccontextmanager
    async def _serving(self) -> AsyncIterator[dict[str, Any]]:
        """The worker beside the app while the block runs (when there is one)."""
        if not self.run_worker:
            yield {STATE_KEY: self}
            return
        assert self.worker is not None
        async with self.worker.serve(self.redis, retry=self.retry):
            cfg = self.worker.config
            log.info(
                "asynq-aio worker started in the app: %s, queues %s, concurrency %d, %d periodic tasks",
                self.redis.describe(),
                ", ".join(f"{q}={w}" for q, w in cfg.queues.items()),
                cfg.concurrency,
                len(self.worker.schedule),
            )
            yield {STATE_KEY: self}


def _show_logs(level: str) -> None:
    """Under uvicorn's default logging nothing handles the ``asynq_aio`` loggers (uvicorn configures
    only its own), so the worker's start line, retries and errors went to Python's last-resort
    handler, WARNING and up only. When neither the root logger nor ``asynq_aio`` has a handler,
    give ``asynq_aio`` one that writes like uvicorn's (``INFO:     message`` to stderr); an app that
    configures logging itself is left alone."""
    pkg = logging.getLogger("asynq_aio")
    if logging.getLogger().handlers or pkg.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:%(padding)s%(message)s"))
    handler.addFilter(_pad_level)
    pkg.addHandler(handler)
    pkg.setLevel(level.upper())


def _pad_level(record: logging.LogRecord) -> bool:
    record.padding = " " * max(1, 9 - len(record.levelname))  # uvicorn's "INFO:     " column
    return True


def get_asynq(conn: HTTPConnection) -> Asynq:
    """The :class:`Asynq` of the app serving ``conn``: from the lifespan state, else ``app.state``."""
    found = getattr(conn.state, STATE_KEY, None)
    if not isinstance(found, Asynq):
        found = getattr(conn.app.state, STATE_KEY, None)
    if not isinstance(found, Asynq):
        raise RuntimeError(_NOT_RUNNING)
    return found


def get_client(conn: HTTPConnection) -> Client:
    """FastAPI dependency: the app's shared Client."""
    return get_asynq(conn).client


def get_inspector(conn: HTTPConnection) -> Inspector:
    """FastAPI dependency: the app's shared Inspector."""
    return get_asynq(conn).inspector


#: ``client: AsynqClient`` in a route's signature injects the app's shared Client.
AsynqClient = Annotated[Client, Depends(get_client)]
#: ``inspector: AsynqInspector`` injects the app's shared Inspector.
AsynqInspector = Annotated[Inspector, Depends(get_inspector)]
