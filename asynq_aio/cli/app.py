"""The root ``asynq-aio`` command: mounts each command group."""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated

import typer

from asynq_aio.cli.dash import dash
from asynq_aio.cli.dev import dev_app
from asynq_aio.cli.group import group_app
from asynq_aio.cli.metrics import metrics
from asynq_aio.cli.queue import queue_app
from asynq_aio.cli.scheduler import scheduler
from asynq_aio.cli.servers import cron_app, server_app
from asynq_aio.cli.stats import stats
from asynq_aio.cli.task import task_app
from asynq_aio.cli.web import web
from asynq_aio.cli.worker import worker

app = typer.Typer(
    name="asynq-aio",
    help="asynq-aio: an asyncio task queue on Redis Cluster, wire-compatible with Go Asynq.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"asynq-aio {version('asynq-aio')} (storage format of Go Asynq v0.26)")
        raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """asynq-aio: an asyncio task queue on Redis Cluster, wire-compatible with Go Asynq."""


app.command("worker")(worker)
app.add_typer(queue_app, name="queue")
app.add_typer(task_app, name="task")
app.add_typer(group_app, name="group")
app.add_typer(server_app, name="server")
app.add_typer(cron_app, name="cron")
app.command("stats")(stats)
app.command("dash")(dash)
app.command("metrics")(metrics)
app.command("scheduler")(scheduler)
app.add_typer(dev_app, name="dev")
app.command("web")(web)


def main() -> None:
    """The ``asynq-aio`` console script's entry point (see ``[project.scripts]``): runs the typer app."""
    app()
