"""``asynq-aio worker module:attr``: run the App (or ServeMux, or handler) defined in the user's code."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from asynq_aio._application import App
from asynq_aio._mux import ServeMux
from asynq_aio.cli.common import (
    ConnectionFlags,
    clean_errors,
    connection_flags,
    fail,
    load_attribute,
    run_async,
)
from asynq_aio.cli.reload import supervise, watched_dirs
from asynq_aio.logfmt import configure_logging
from asynq_aio.server.config import Config

CLI_CONCURRENCY = 10  # a bare mux's concurrency under the CLI (Config's own default is the CPU count)


def load_app(spec: str) -> App:
    """Import the App, ServeMux or handler at ``package.module:attribute``, as an App.

    A class is callable too, so ``callable`` alone would let ``tasks:ResizePayload`` (a payload
    model) through, to fail on every task instead of at start."""
    obj = load_attribute(spec, "myapp.tasks:app")
    if isinstance(obj, App):
        return obj
    if isinstance(obj, ServeMux):
        return App(obj).with_config(concurrency=CLI_CONCURRENCY)
    if isinstance(obj, type):
        got = f"the class {obj.__qualname__}"
    elif not callable(obj):
        got = f"a {type(obj).__name__}"
    else:
        return App(obj).with_config(concurrency=CLI_CONCURRENCY)
    raise fail(f"{spec} is {got}, not an App, a ServeMux or an async handler{_muxes_in(spec)}")


def _muxes_in(spec: str) -> str:
    """A hint naming the module's App and ServeMux instances, the usual things to point the worker at."""
    module_name = spec.partition(":")[0]
    module = sys.modules.get(module_name)
    found = vars(module).items() if module is not None else ()
    names = sorted(name for name, value in found if isinstance(value, App | ServeMux))
    if not names:
        return ""
    return " (did you mean " + " or ".join(f"{module_name}:{n}" for n in names) + "?)"


def parse_queues(values: list[str], *, flag: str = "--queue", number: str = "weight") -> dict[str, int]:
    """``--queue`` values (``NAME`` or ``NAME=WEIGHT``, weight 1 when omitted; NAME may be a glob
    pattern such as ``tenant:*``, checked by Config) as queue weights; a malformed one exits the
    command with an error. ``--shards`` values (``NAME=COUNT``) go through here too, so both flags
    read and fail alike; Config checks the numbers."""
    queues: dict[str, int] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not name:
            raise fail(f"{flag} takes NAME or NAME={number.upper()}, got {item!r}")
        try:
            queues[name] = int(value) if sep else 1
        except ValueError:
            raise fail(f"{flag} {item!r}: {number} must be a whole number") from None
    return queues


@clean_errors
@connection_flags(after="app")
def worker(
    conn: ConnectionFlags,
    app: Annotated[str, typer.Argument(help="MODULE:ATTRIBUTE of an App, a ServeMux or an async handler.")],
    concurrency: Annotated[
        int | None,
        typer.Option(
            envvar="ASYNQ_CONCURRENCY",
            min=1,
            help=f"Most tasks run at once (default: the App's config, or {CLI_CONCURRENCY} for a mux).",
        ),
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            "-q",
            help="NAME=WEIGHT, repeat for each queue; NAME may be a glob pattern ('tenant:*=1': every "
            "queue it matches, found in asynq:queues, shares the weight in turn) (default: the App's "
            "config, or default=1 plus the queues the mux's TaskDefs name).",
        ),
    ] = None,
    shards: Annotated[
        list[str] | None,
        typer.Option(
            "--shards",
            help="NAME=COUNT, repeat for each sharded queue: the --queue entry NAME is served as the "
            "COUNT (2..256) shards of the sharded queue NAME, sharing its weight in turn (default: "
            "the App's config).",
        ),
    ] = None,
    strict_priority: Annotated[
        bool | None,
        typer.Option(
            "--strict-priority/--no-strict-priority", help="Always drain higher-weight queues first."
        ),
    ] = None,
    shutdown_timeout: Annotated[
        float | None, typer.Option(min=0, help="Seconds handlers get at shutdown (default 8).")
    ] = None,
    run_scheduler: Annotated[
        bool,
        typer.Option(
            "--scheduler",
            help="Also enqueue the App's periodic tasks (safe on several workers: each fire is "
            "enqueued once).",
        ),
    ] = False,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload",
            help="Development: restart the worker when a .py file under the current directory changes.",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(envvar="ASYNQ_LOG_LEVEL")] = "INFO",
    log_format: Annotated[
        str,
        typer.Option(
            envvar="ASYNQ_LOG_FORMAT",
            help="text (a line plus key=value task fields) or json (one object per line).",
        ),
    ] = "text",
) -> None:
    """Run a worker until SIGINT/SIGTERM (uvloop when available)."""
    if log_format not in ("text", "json"):
        raise fail(f"--log-format must be text or json, got {log_format!r}")
    configure_logging(log_level.upper(), "json" if log_format == "json" else "text")
    # the flags first: a typo in them should not wait for (or be hidden by) the user's imports
    changes: dict[str, object] = {}
    queues = parse_queues(queue) if queue else None
    shard_counts = parse_queues(shards, flag="--shards", number="count") if shards else None
    if queues is not None:
        changes["queues"] = queues
    if shard_counts is not None:
        changes["shards"] = shard_counts
    if concurrency is not None:
        changes["concurrency"] = concurrency
    if strict_priority is not None:
        changes["strict_priority"] = strict_priority
    if shutdown_timeout is not None:
        changes["shutdown_timeout"] = shutdown_timeout
    # check the flags' values now, before the import; --shards without --queue names entries of the
    # App's queues, so only its names and counts can be checked here
    if shard_counts is not None and queues is None:
        Config(**{**changes, "queues": dict.fromkeys(shard_counts, 1)})
    else:
        Config(**changes)
    opt = conn.options()
    if reload:
        # the supervisor imports nothing of the user's: a broken edit must not stop it
        raise typer.Exit(supervise([a for a in sys.argv[1:] if a != "--reload"], watched_dirs(app)))
    target = load_app(app)
    if queues is not None and shard_counts is None:
        # --queue replaces the App's queues: its sharded entries stay sharded where still listed
        changes["shards"] = {q: n for q, n in target.config.shards.items() if q in queues}
    if "gc_freeze" not in target.config.model_fields_set:
        changes["gc_freeze"] = True  # this process is the worker's alone (server/gc_freeze.py)
    target = target.with_config(**changes)
    if run_scheduler and not len(target.schedule):
        raise fail(f"--scheduler: {app} has no periodic tasks (give App(..., schedule=Schedule()) some)")
    log = logging.getLogger("asynq_aio.cli")
    config = target.config
    log.info(
        "worker %s: %s, concurrency %d, queues %s%s%s",
        app,
        opt.describe(),
        config.concurrency,
        config.queues,
        f", shards {config.shards}" if config.shards else "",
        "" if config.gc_freeze else ", gc_freeze off",
    )
    if len(target.schedule) and not run_scheduler:
        log.info(
            "%s has %d periodic tasks, not scheduled by this worker (add --scheduler, or run "
            "`asynq-aio scheduler %s`)",
            app,
            len(target.schedule),
            app,
        )
    run_async(lambda: target.run(opt, scheduler=run_scheduler))
