"""``asynq-aio worker module:attr``: run a Server for a ServeMux defined in the user's code."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from asynq_aio.cli.common import (
    ConnectionFlags,
    clean_errors,
    connection_flags,
    fail,
    load_attribute,
    run_async,
)
from asynq_aio.logfmt import configure_logging
from asynq_aio.mux import ServeMux
from asynq_aio.server.config import Config
from asynq_aio.server.server import Server


def load_object(spec: str) -> Any:
    """Import the ServeMux or handler at ``package.module:attribute``.

    A class is callable too, so ``callable`` alone would let ``tasks:ResizePayload`` (a payload
    model) through, to fail on every task instead of at start."""
    obj = load_attribute(spec, "myapp.tasks:mux")
    if isinstance(obj, ServeMux):
        return obj
    if isinstance(obj, type):
        got = f"the class {obj.__qualname__}"
    elif not callable(obj):
        got = f"a {type(obj).__name__}"
    else:
        return obj
    raise fail(f"{spec} is {got}, not a ServeMux or an async handler{_muxes_in(spec)}")


def _muxes_in(spec: str) -> str:
    """A hint naming the module's ServeMux instances, the usual thing to point the worker at."""
    module_name = spec.partition(":")[0]
    module = sys.modules.get(module_name)
    found = vars(module).items() if module is not None else ()
    names = sorted(name for name, value in found if isinstance(value, ServeMux))
    if not names:
        return ""
    return " (did you mean " + " or ".join(f"{module_name}:{n}" for n in names) + "?)"


def parse_queues(values: list[str]) -> dict[str, int]:
    """``--queue`` values (``NAME`` or ``NAME=WEIGHT``, weight 1 when omitted) as queue weights; a malformed
    one exits the command with an error."""
    queues: dict[str, int] = {}
    for item in values:
        name, sep, weight = item.partition("=")
        if not name:
            raise fail(f"--queue takes NAME or NAME=WEIGHT, got {item!r}")
        try:
            queues[name] = int(weight) if sep else 1
        except ValueError:
            raise fail(f"--queue {item!r}: weight must be a whole number") from None
    return queues


@clean_errors
@connection_flags(after="app")
def worker(
    conn: ConnectionFlags,
    app: Annotated[str, typer.Argument(help="MODULE:ATTRIBUTE of a ServeMux (or an async handler).")],
    concurrency: Annotated[
        int, typer.Option(envvar="ASYNQ_CONCURRENCY", help="Most tasks run at once.")
    ] = 10,
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="NAME=WEIGHT, repeat for each queue (default: default=1)."),
    ] = None,
    strict_priority: Annotated[bool, typer.Option(help="Always drain higher-weight queues first.")] = False,
    shutdown_timeout: Annotated[float, typer.Option(help="Seconds handlers get at shutdown.")] = 8.0,
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
    queues = parse_queues(queue or [])
    config = Config(
        concurrency=concurrency,
        queues=queues or {"default": 1},
        strict_priority=strict_priority,
        shutdown_timeout=shutdown_timeout,
    )
    opt = conn.options()
    handler = load_object(app)
    if not queues and isinstance(handler, ServeMux):
        # no --queue: serve the queues the mux's TaskDefs name, beside "default"
        named = dict.fromkeys(handler.task_queues(), 1)
        config = config.with_(queues={"default": 1, **named})
    server = Server(opt, config)
    logging.getLogger("asynq_aio.cli").info(
        "worker %s: %s, concurrency %d, queues %s", app, opt.describe(), concurrency, config.queues
    )
    run_async(lambda: server.run(handler))
