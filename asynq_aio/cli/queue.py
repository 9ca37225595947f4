"""``asynq-aio queue ...``: queue listing (with cluster slots and nodes)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

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
from asynq_aio.inspector import Inspector, QueueLocation
from asynq_aio.transport import RetryPolicy

queue_app = typer.Typer(help="Inspect and manage queues.", no_args_is_help=True)

CLI_RETRY = RetryPolicy(budget=5.0)


@queue_app.command("ls")
@clean_errors
def ls(
    cluster: Annotated[bool, typer.Option("--cluster", help="Show each queue's key slot and nodes.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    redis_url: RedisURLOption = None,
    cluster_addrs: ClusterAddrsOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
) -> None:
    """List queues; with --cluster, the cluster key slot and nodes (master first) of each."""
    opt = connection_options(redis_url, cluster_addrs, username, password)

    async def go() -> tuple[list[str], list[QueueLocation]]:
        async with Inspector(opt, retry=CLI_RETRY) as insp:
            queues = await insp.queues()
            if not cluster:
                return queues, []
            if not insp.is_cluster:
                raise fail("--cluster needs a Redis Cluster (--cluster-addrs or ASYNQ_CLUSTER_ADDRS)")
            return queues, await insp.cluster_locations(queues)

    queues, locations = run_async(go, uvloop=False, quiet=True)
    if as_json:
        if cluster:
            typer.echo(
                json.dumps(
                    [
                        {
                            "queue": loc.queue,
                            "slot": loc.slot,
                            "nodes": [{"id": n.node_id, "addr": n.addr, "role": n.role} for n in loc.nodes],
                        }
                        for loc in locations
                    ],
                    indent=2,
                )
            )
        else:
            typer.echo(json.dumps(queues))
        return
    console = Console(width=200)
    if not queues:
        console.print("No queues.")
        return
    if not cluster:
        table = Table("Queue", box=None, header_style="bold")
        for q in queues:
            table.add_row(q)
        console.print(table)
        return
    table = Table("Queue", "Cluster KeySlot", "Cluster Nodes", box=None, header_style="bold")
    for loc in locations:
        nodes = "\n".join(f"{n.node_id} {n.addr} ({n.role})" for n in loc.nodes) or "(slot not covered)"
        table.add_row(loc.queue, str(loc.slot), nodes)
    console.print(table)
