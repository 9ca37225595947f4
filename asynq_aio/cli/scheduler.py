"""``asynq-aio scheduler MODULE:ATTRIBUTE``: run periodic tasks from a list or a provider function.

The attribute is a sequence of :class:`~asynq_aio.periodic.PeriodicTaskConfig`, or a plain or async
function returning one (re-read every ``--sync-interval`` seconds, so entries can change without a
restart). Run it on two hosts for availability: each fire is still enqueued once.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from asynq_aio.cli.common import (
    ClusterAddrsOption,
    PasswordOption,
    RedisURLOption,
    UsernameOption,
    clean_errors,
    connection_options,
    fail,
    run_async,
)
from asynq_aio.logfmt import configure_logging
from asynq_aio.periodic import ConfigProvider, PeriodicTaskConfig, PeriodicTaskManager
from asynq_aio.scheduler import CronEntry, Scheduler

__all__ = ["scheduler"]


def _load(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise fail(f"expected MODULE:ATTRIBUTE (e.g. myapp.cron:entries), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise fail(f"cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise fail(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _configs(spec: str, value: Any) -> Sequence[PeriodicTaskConfig]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise fail(f"{spec} returned a {type(value).__name__}, not a list of PeriodicTaskConfig")
    for item in value:
        if not isinstance(item, PeriodicTaskConfig):
            raise fail(f"{spec} holds a {type(item).__name__}, not a PeriodicTaskConfig")
    return value


@clean_errors
def scheduler(
    entries: Annotated[
        str,
        typer.Argument(
            help="MODULE:ATTRIBUTE of a list of PeriodicTaskConfig, or of a (async) function returning one."
        ),
    ],
    redis_url: RedisURLOption = None,
    cluster_addrs: ClusterAddrsOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
    tz: Annotated[
        str,
        typer.Option("--tz", envvar="ASYNQ_SCHEDULER_TZ", help="Time zone of cron specs (IANA)."),
    ] = "UTC",
    sync_interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between re-reads of a provider function.")
    ] = 60.0,
    log_level: Annotated[str, typer.Option(envvar="ASYNQ_LOG_LEVEL")] = "INFO",
) -> None:
    """Enqueue periodic tasks on their cron specs until SIGINT/SIGTERM."""
    configure_logging(log_level.upper(), "text")
    target = _load(entries)
    sched = Scheduler(connection_options(redis_url, cluster_addrs, username, password), location=tz)
    provider: ConfigProvider
    if callable(target):
        fn = target

        async def provider() -> Sequence[PeriodicTaskConfig]:
            result = fn()
            return _configs(entries, await result if inspect.isawaitable(result) else result)

        first: Sequence[PeriodicTaskConfig] | None = None
    else:
        first = _configs(entries, target)
        static = list(first)

        def provider() -> Sequence[PeriodicTaskConfig]:
            return static

    if first is not None:  # a fixed list: a bad spec is an error now, not a log line per sync
        for cfg in first:
            CronEntry.build(cfg.spec, cfg.task, cfg.options, location=sched.location)
    manager = PeriodicTaskManager(sched, provider, sync_interval=sync_interval)
    logging.getLogger("asynq_aio.cli").info("scheduler %s: %s, time zone %s", entries, sched.id, tz)
    run_async(manager.run)
