"""The root ``asynq-aio`` command: mounts each command group."""

from __future__ import annotations

import typer

from asynq_aio.cli.dev import dev_app
from asynq_aio.cli.queue import queue_app
from asynq_aio.cli.worker import worker

app = typer.Typer(
    name="asynq-aio",
    help="asynq-aio: an asyncio task queue on Redis Cluster, wire-compatible with Go Asynq.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("worker")(worker)
app.add_typer(queue_app, name="queue")
app.add_typer(dev_app, name="dev")


def main() -> None:
    app()
