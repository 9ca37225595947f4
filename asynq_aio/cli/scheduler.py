"""``asynq-aio scheduler MODULE:ATTRIBUTE``: run periodic tasks from an App, a Schedule, a list or a
provider function.

The attribute is an :class:`~asynq_aio.App` (its schedule), a :class:`~asynq_aio.Schedule`, any
sequence of :class:`~asynq_aio._periodic.PeriodicTaskConfig`, or a plain or async function returning
one (re-read every ``--sync-interval`` seconds, so entries can change without a restart).
Run it on two hosts for availability: each fire is still enqueued once.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from asynq_aio._application import App
from asynq_aio._periodic import ConfigProvider, PeriodicTaskConfig, PeriodicTaskManager, Schedule
from asynq_aio._scheduler import CronEntry, Scheduler
from asynq_aio.cli.common import (
    ConnectionFlags,
    clean_errors,
    connection_flags,
    fail,
    load_attribute,
    run_async,
)
from asynq_aio.logfmt import configure_logging

__all__ = ["scheduler"]


def _configs(spec: str, value: Any) -> Sequence[PeriodicTaskConfig]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise fail(f"{spec} returned a {type(value).__name__}, not a list of PeriodicTaskConfig")
    for item in value:
        if not isinstance(item, PeriodicTaskConfig):
            raise fail(f"{spec} holds a {type(item).__name__}, not a PeriodicTaskConfig")
    return value


@clean_errors
@connection_flags(after="entries")
def scheduler(
    conn: ConnectionFlags,
    entries: Annotated[
        str,
        typer.Argument(
            help="MODULE:ATTRIBUTE of an App, a Schedule, a list of PeriodicTaskConfig, or a (async) "
            "function returning one."
        ),
    ],
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz",
            envvar="ASYNQ_SCHEDULER_TZ",
            help="Time zone of cron specs (IANA; default: the Schedule's, else UTC).",
        ),
    ] = None,
    sync_interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between re-reads of a provider function.")
    ] = 60.0,
    log_level: Annotated[str, typer.Option(envvar="ASYNQ_LOG_LEVEL")] = "INFO",
) -> None:
    """Enqueue periodic tasks on their cron specs until SIGINT/SIGTERM."""
    configure_logging(log_level.upper(), "text")
    target = load_attribute(entries, "myapp.tasks:app")
    if isinstance(target, App):
        target = target.schedule
    zone = tz if tz is not None else (target.location if isinstance(target, Schedule) else "UTC")
    sched = Scheduler(conn.options(), location=zone)
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
    logging.getLogger("asynq_aio.cli").info(
        "scheduler %s: %s, time zone %s", entries, sched.id, sched.location
    )
    run_async(manager.run)
