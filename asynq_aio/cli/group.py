"""``asynq-aio group ls QUEUE``: the groups of tasks waiting for aggregation, with their sizes."""

from __future__ import annotations

from typing import Annotated

import typer

from asynq_aio.cli.common import (
    ClusterAddrsOption,
    PasswordOption,
    RedisURLOption,
    UsernameOption,
    clean_errors,
)
from asynq_aio.cli.render import JsonOption, console, echo_json, table, with_inspector
from asynq_aio.inspector import GroupInfo, Inspector

group_app = typer.Typer(help="Inspect groups of tasks waiting for aggregation.", no_args_is_help=True)


@group_app.command("ls")
@clean_errors
def ls(
    queue: Annotated[str, typer.Argument(help="Queue name.")],
    as_json: JsonOption = False,
    redis_url: RedisURLOption = None,
    cluster_addrs: ClusterAddrsOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
) -> None:
    """List the queue's groups and how many tasks each holds."""

    async def go(insp: Inspector) -> list[GroupInfo]:
        return await insp.groups(queue)

    groups = with_inspector((redis_url, cluster_addrs, username, password), go)
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
