"""What every command shares: connection flags (with ASYNQ_* environment variables), running a
coroutine, and turning errors into one clear line instead of a traceback."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, ParamSpec, TypeVar

import anyio
import typer
from redis import exceptions as rx

from asynq_aio.connection import RedisClusterClientOpt, RedisConnOpt, parse_redis_url
from asynq_aio.errors import AsynqError

P = ParamSpec("P")
R = TypeVar("R")

RedisURLOption = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        envvar="ASYNQ_REDIS_URL",
        help="redis://[user:pass@]host:port/db, rediss://..., redis-sentinel://h:p/db?master=name",
    ),
]
ClusterAddrsOption = Annotated[
    str | None,
    typer.Option(
        "--cluster-addrs",
        envvar="ASYNQ_CLUSTER_ADDRS",
        help="Comma-separated host:port seed nodes of a Redis Cluster.",
    ),
]
PasswordOption = Annotated[
    str | None, typer.Option("--password", envvar="ASYNQ_REDIS_PASSWORD", help="Redis password.")
]
UsernameOption = Annotated[
    str | None, typer.Option("--username", envvar="ASYNQ_REDIS_USERNAME", help="Redis ACL user.")
]


def connection_options(
    redis_url: str | None,
    cluster_addrs: str | None,
    username: str | None = None,
    password: str | None = None,
) -> RedisConnOpt:
    """Cluster addresses win over a URL; with neither, the local default ``redis://127.0.0.1:6379``."""
    opt: RedisConnOpt
    if cluster_addrs:
        addrs = [a.strip() for a in cluster_addrs.split(",") if a.strip()]
        opt = RedisClusterClientOpt(addrs=addrs)
    else:
        opt = parse_redis_url(redis_url or "redis://127.0.0.1:6379/0")
    updates: dict[str, Any] = {}
    if username:
        updates["username"] = username
    if password:
        updates["password"] = password
    return opt.model_copy(update=updates) if updates else opt


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def clean_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Expected failures (bad input, unreachable Redis) print one line and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (AsynqError, rx.RedisError, rx.RedisClusterException, ValueError, OSError) as exc:
            raise fail(str(exc) or type(exc).__name__) from None

    return wrapper


def run_async(fn: Callable[[], Awaitable[R]], *, uvloop: bool = True, quiet: bool = False) -> R:
    """Run ``fn`` in a new loop. ``quiet`` (admin commands) hides the transport's retry warnings:
    the one-line error at the end says what failed."""
    if quiet:
        logging.getLogger("asynq_aio.transport").setLevel(logging.ERROR)
    try:
        return anyio.run(fn, backend_options={"use_uvloop": uvloop})
    except ImportError:
        return anyio.run(fn)
