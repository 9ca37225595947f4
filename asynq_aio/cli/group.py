"""``asynq-aio group ls QUEUE``: the groups of tasks waiting for aggregation, with their sizes."""

from __future__ import annotations

import typer

from asynq_aio._inspection import GroupInfo
from asynq_aio._inspector import Inspector
from asynq_aio.cli.common import ConnectionFlags, clean_errors, connection_flags
from asynq_aio.cli.render import JsonOption, QueueArgument, console, echo_json, table, with_inspector

group_app = typer.Typer(help="Inspect groups of tasks waiting for aggregation.", no_args_is_help=True)


@group_app.command("ls")
@clean_errors
@connection_flags
def ls(conn: ConnectionFlags, queue: QueueArgument, as_json: JsonOption = False) -> None:
    """List the queue's groups and how many tasks each holds."""

    async def go(insp: Inspector) -> list[GroupInfo]:
        return await insp.groups(queue)

    groups = with_inspector(conn, go)
    if as_json:
        echo_json(groups)
        return
    c = console()
    if not groups:
        c.print(f'No groups in "{queue}" queue', markup=False)
        return
    t = table("Group", "Size")
    for g in groups:
        t.add_row(g.group, str(g.size))
    c.print(t)
