"""What every command shares: connection flags (with ASYNQ_* environment variables), running a
coroutine, and turning errors into one clear line instead of a traceback."""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar, cast, overload

import anyio
import typer
from redis import exceptions as rx

from asynq_aio._connection import RedisClusterClientOpt, RedisConnOpt, parse_redis_url
from asynq_aio._errors import AsynqError

P = ParamSpec("P")
R = TypeVar("R")

RedisURLOption = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        envvar="ASYNQ_REDIS_URL",
        # no [...] in the text: typer versions differ on reading it as rich markup (hidden) or not
        # (an escaping backslash shown), so the optional part is said in words
        help=(
            "redis://host:port/db, rediss://..., redis-cluster://h:p,h:p, "
            "redis-sentinel://h:p/db?master=name (user:pass@ before the host, if needed)"
        ),
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


@dataclass(frozen=True, slots=True)
class ConnectionFlags:
    """The four connection flags of a command, as given (``None`` when neither the flag nor its
    environment variable is set). Field names are the typer parameter names."""

    redis_url: str | None = None
    cluster_addrs: str | None = None
    username: str | None = None
    password: str | None = None

    def options(self) -> RedisConnOpt:
        """The connection options these flags describe (see :func:`connection_options` for precedence)."""
        return connection_options(self.redis_url, self.cluster_addrs, self.username, self.password)

    @property
    def uses_default(self) -> bool:
        """Neither an address nor a URL was given: the command asks the local default Redis,
        which answers happily with nothing when the queues live elsewhere."""
        return not self.redis_url and not self.cluster_addrs


_FLAG_TYPES: dict[str, Any] = {
    "redis_url": RedisURLOption,
    "cluster_addrs": ClusterAddrsOption,
    "username": UsernameOption,
    "password": PasswordOption,
}

ConnCommand = Callable[Concatenate[ConnectionFlags, P], R]


@overload
def connection_flags(fn: ConnCommand[P, R], /) -> Callable[P, R]:
    """As a bare decorator: ``@connection_flags``, the flags listed last."""


@overload
def connection_flags(*, after: str) -> Callable[[ConnCommand[P, R]], Callable[P, R]]:
    """With ``after``: ``@connection_flags(after="app")``, the flags listed after that parameter."""


def connection_flags(
    fn: ConnCommand[P, R] | None = None, /, *, after: str | None = None
) -> Callable[P, R] | Callable[[ConnCommand[P, R]], Callable[P, R]]:
    """Give a command the four connection flags as one first parameter, ``conn: ConnectionFlags``.

    Typer reads the command's signature, so the wrapper's ``__signature__`` is the command's own
    parameters (``conn`` left out) with ``--redis-url``, ``--cluster-addrs``, ``--username`` and
    ``--password`` added last, or right after the parameter named ``after`` (where ``--help`` of
    worker, scheduler and metrics has always listed them). Stacks with ``@clean_errors`` in either
    order."""
    if fn is None:
        return lambda f: _with_flags(f, after)
    return _with_flags(fn, after)


def _with_flags(fn: ConnCommand[P, R], after: str | None) -> Callable[P, R]:
    sig = inspect.signature(fn, eval_str=True)  # typer needs the annotations' values, not strings
    own = list(sig.parameters.values())
    if not own or own[0].name != "conn":
        raise TypeError(f"{fn.__qualname__}: the first parameter must be conn: ConnectionFlags")
    own = own[1:]
    names = [p.name for p in own]
    if after is not None and after not in names:
        raise TypeError(f"{fn.__qualname__} has no parameter {after!r} to list the connection flags after")
    at = len(own) if after is None else names.index(after) + 1
    flags = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=annotation)
        for name, annotation in _FLAG_TYPES.items()
    ]
    params = [*own[:at], *flags, *own[at:]]

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        # typer passes the flags it parsed by keyword, next to the command's own parameters
        conn = ConnectionFlags(**{name: cast("str | None", kwargs.pop(name, None)) for name in _FLAG_TYPES})
        return fn(conn, *args, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": sig.return_annotation}
    return wrapper


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` to stderr and return the ``typer.Exit(1)`` for the caller to raise."""
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


def load_attribute(spec: str, example: str) -> Any:
    """Import ``package.module:attribute`` (the current directory is importable, as with uvicorn);
    a bad spec exits with one line naming ``example`` as the expected form."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise fail(f"expected MODULE:ATTRIBUTE (e.g. {example}), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except SyntaxError as exc:  # the user's code, or a module it imports
        where = _location(exc.filename, exc.lineno)
        raise fail(f"cannot import {module_name!r}: syntax error at {where}: {exc.msg}") from None
    except ImportError as exc:
        # a failing import inside the module names neither file nor line by itself
        frame = _innermost_user_frame(exc)
        at = f" (at {_location(frame.filename, frame.lineno)})" if frame is not None else ""
        raise fail(f"cannot import {module_name!r}: {exc}{at}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise fail(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _location(filename: str | None, lineno: int | None) -> str:
    """``file:line``, relative to the current directory when the file is under it."""
    path = filename or "<unknown>"
    try:
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            path = rel
    except ValueError:  # another drive (Windows)
        pass
    return f"{path}:{lineno}" if lineno else path


def _innermost_user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame of the import outside the import machinery and this module: the
    ``import`` statement that failed. None when the named module itself was not found."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<")
        and not f.filename.startswith(_IMPORTLIB_DIR)
        and f.filename != __file__
    ]
    return frames[-1] if frames else None


_IMPORTLIB_DIR = os.path.dirname(importlib.__file__ or "") + os.sep


def run_async(fn: Callable[[], Awaitable[R]], *, uvloop: bool = True, quiet: bool = False) -> R:
    """Run ``fn`` in a new loop. ``quiet`` (admin commands) hides the transport's retry warnings:
    the one-line error at the end says what failed."""
    if quiet:
        logging.getLogger("asynq_aio.transport").setLevel(logging.ERROR)
    try:
        return anyio.run(fn, backend_options={"use_uvloop": uvloop})
    except ImportError:
        return anyio.run(fn)
