"""``asynq-aio queue ...``: list, inspect, history, pause/unpause and remove queues."""

from __future__ import annotations

from typing import Annotated

import typer

from asynq_aio._errors import QueueNotFoundError
from asynq_aio._inspection import QueueInfo, QueueLocation, ShardedQueueInfo
from asynq_aio._inspector import Inspector
from asynq_aio.cli.common import ConnectionFlags, clean_errors, connection_flags, fail
from asynq_aio.cli.render import (
    CLI_RETRY,
    STATE_COLUMNS,
    JsonOption,
    console,
    echo_json,
    error_rate,
    fmt_bytes,
    fmt_duration,
    for_each,
    print_lines,
    rate_table,
    sections,
    table,
    with_inspector,
)
from asynq_aio.protocol.shards import group_shards, parse_shard

__all__ = ["CLI_RETRY", "queue_app"]

queue_app = typer.Typer(help="Inspect and manage queues.", no_args_is_help=True)

QueuesArgument = Annotated[list[str], typer.Argument(help="Queue name(s).")]


@queue_app.command("ls")
@clean_errors
@connection_flags
def ls(
    conn: ConnectionFlags,
    cluster: Annotated[bool, typer.Option("--cluster", help="Show each queue's key slot and nodes.")] = False,
    each: Annotated[
        bool,
        typer.Option("--each", help="List a sharded queue's shards one by one instead of as one row."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List queues, a sharded queue's shards as one row under its logical name (--each: one row per
    shard); with --cluster, the cluster key slot and nodes (master first) of each queue, shards
    included. --json lists the stored queue names, shards by name (what the other commands take)."""

    async def go(insp: Inspector) -> tuple[list[str], list[QueueLocation]]:
        queues = await insp.queues()
        if not cluster:
            return queues, []
        if not insp.is_cluster:
            raise fail("--cluster needs a Redis Cluster (--cluster-addrs or ASYNQ_CLUSTER_ADDRS)")
        return queues, await insp.cluster_locations(queues)

    queues, locations = with_inspector(conn, go)
    if as_json:
        if cluster:
            echo_json(
                [
                    {
                        "queue": loc.queue,
                        "slot": loc.slot,
                        "nodes": [{"id": n.node_id, "addr": n.addr, "role": n.role} for n in loc.nodes],
                    }
                    for loc in locations
                ]
            )
        else:
            echo_json(queues)
        return
    c = console()
    if not queues:
        c.print("No queues.")
        return
    if not cluster:
        groups = {} if each else group_shards(queues)
        if not groups:
            t = table("Queue")
            for q in queues:
                t.add_row(q)
            c.print(t)
            return
        t = table("Queue", "Shards")
        rows = [(q, "") for q in queues if parse_shard(q) is None]
        rows += [(logical, shard_count(names)) for logical, names in groups.items()]
        for name, count in sorted(rows):
            t.add_row(name, count)
        c.print(t)
        return
    t = table("Queue", "Cluster KeySlot", "Cluster Nodes")
    for loc in locations:
        nodes = "\n".join(f"{n.node_id} {n.addr} ({n.role})" for n in loc.nodes) or "(slot not covered)"
        t.add_row(loc.queue, str(loc.slot), nodes)
    c.print(t)


def shard_count(names: tuple[str, ...]) -> str:
    """A sharded queue's shard count as ``queue ls`` shows it: the number found, and the count their
    names declare when it differs (a shard not yet enqueued to, or two counts after a change)."""
    declared = sorted({parsed[2] for n in names if (parsed := parse_shard(n)) is not None})
    if declared == [len(names)]:
        return str(len(names))
    return f"{len(names)} (of {' + '.join(map(str, declared))})"


@queue_app.command("inspect")
@clean_errors
@connection_flags
def inspect(conn: ConnectionFlags, queues: QueuesArgument, as_json: JsonOption = False) -> None:
    """Size, tasks by state, today's counters, latency and memory of each queue; a sharded queue's
    logical name shows its shards added up."""
    infos = [info for _, info in for_each(conn, queues, queue_or_sharded)]
    if as_json:
        echo_json(infos if len(infos) > 1 else infos[0])
        return
    for info in sections(console(), infos):
        print_queue_info(info)


async def queue_or_sharded(insp: Inspector, queue: str) -> QueueInfo:
    """The queue's info, or, when no queue has that name, the sharded queue's of that logical name."""
    try:
        return await insp.get_queue_info(queue)
    except QueueNotFoundError as missing:
        try:
            return await insp.sharded_queue_info(queue)
        except QueueNotFoundError:
            raise missing from None


def print_queue_info(info: QueueInfo) -> None:
    """Print one queue's info in the layout of Go's ``asynq queue inspect``."""
    c = console()
    c.print("[bold]Queue Info[/bold]")
    print_lines(
        c,
        [
            ("Name", info.queue),
            *(
                [("Shards", ", ".join(s.queue for s in info.shards))]
                if isinstance(info, ShardedQueueInfo)
                else []
            ),
            ("Size", str(info.size)),
            ("Groups", str(info.groups)),
            ("Paused", str(info.paused).lower()),
        ],
    )
    print_lines(c, [("Latency", fmt_duration(info.latency)), ("Memory", fmt_bytes(info.memory_usage))])
    c.print()
    c.print("[bold]Task Count by State[/bold]")
    t = table(*STATE_COLUMNS)
    t.add_row(*(str(getattr(info, s)) for s in STATE_COLUMNS))
    c.print(t)
    c.print()
    c.print(f"[bold]Daily Stats {info.timestamp:%Y-%m-%d} UTC[/bold]")
    c.print(rate_table(info.processed, info.failed))
    c.print()
    c.print("[bold]All-time Stats[/bold]")
    c.print(rate_table(info.processed_total, info.failed_total))


@queue_app.command("history")
@clean_errors
@connection_flags
def history(
    conn: ConnectionFlags,
    queues: QueuesArgument,
    days: Annotated[int, typer.Option("--days", "-x", min=1, help="How many days back, today first.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """Processed and failed counts per UTC day."""
    stats = for_each(conn, queues, lambda insp, q: insp.history(q, days))
    if as_json:
        echo_json(dict(stats))
        return
    c = console()
    for q, rows in sections(c, stats):
        c.print(f"Queue: {q}\n", markup=False)
        t = table("date (UTC)", "processed", "failed", "error rate")
        for d in rows:
            t.add_row(d.date.isoformat(), str(d.processed), str(d.failed), error_rate(d.processed, d.failed))
        c.print(t)


@queue_app.command("pause")
@clean_errors
@connection_flags
def pause(conn: ConnectionFlags, queues: QueuesArgument) -> None:
    """Pause queues: servers stop taking their tasks (running tasks finish)."""
    for q, changed in for_each(conn, queues, lambda insp, q: insp.pause_queue(q)):
        typer.echo(f'Successfully paused queue "{q}"' if changed else f'Queue "{q}" was already paused')


@queue_app.command("unpause")
@clean_errors
@connection_flags
def unpause(conn: ConnectionFlags, queues: QueuesArgument) -> None:
    """Unpause queues."""
    for q, changed in for_each(conn, queues, lambda insp, q: insp.unpause_queue(q)):
        typer.echo(f'Successfully unpaused queue "{q}"' if changed else f'Queue "{q}" was not paused')


@queue_app.command("rm")
@clean_errors
@connection_flags
def rm(
    conn: ConnectionFlags,
    queues: QueuesArgument,
    force: Annotated[bool, typer.Option("--force", "-f", help="Remove even if the queue has tasks.")] = False,
) -> None:
    """Remove queues and all their keys. A queue with tasks needs --force; one with active tasks
    is refused."""
    for q, n in for_each(conn, queues, lambda insp, q: insp.delete_queue(q, force=force)):
        typer.echo(f'Successfully removed queue "{q}" ({n} keys deleted)')
