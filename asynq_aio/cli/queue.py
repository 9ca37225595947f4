"""``asynq-aio queue ...``: list, inspect, history, pause/unpause and remove queues."""

from __future__ import annotations

from typing import Annotated

import typer

from asynq_aio.cli.common import (
    ClusterAddrsOption,
    PasswordOption,
    RedisURLOption,
    UsernameOption,
    clean_errors,
    fail,
)
from asynq_aio.cli.render import (
    CLI_RETRY,
    JsonOption,
    console,
    echo_json,
    error_rate,
    fmt_bytes,
    fmt_duration,
    print_lines,
    table,
    with_inspector,
)
from asynq_aio.inspector import DailyStats, Inspector, QueueInfo, QueueLocation

__all__ = ["CLI_RETRY", "queue_app"]

queue_app = typer.Typer(help="Inspect and manage queues.", no_args_is_help=True)

STATE_COLUMNS = ("active", "pending", "aggregating", "scheduled", "retry", "archived", "completed")


@queue_app.command("ls")
@clean_errors
def ls(
    cluster: Annotated[bool, typer.Option("--cluster", help="Show each queue's key slot and nodes.")] = False,
    as_json: JsonOption = False,
    redis_url: RedisURLOption = None,
    cluster_addrs: ClusterAddrsOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
) -> None:
    """List queues; with --cluster, the cluster key slot and nodes (master first) of each."""

    async def go(insp: Inspector) -> tuple[list[str], list[QueueLocation]]:
        queues = await insp.queues()
        if not cluster:
            return queues, []
        if not insp.is_cluster:
            raise fail("--cluster needs a Redis Cluster (--cluster-addrs or ASYNQ_CLUSTER_ADDRS)")
        return queues, await insp.cluster_locations(queues)

    queues, locations = with_inspector((redis_url, cluster_addrs, username, password), go)
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
        t = table("Queue")
        for q in queues:
            t.add_row(q)
        c.print(t)
        return
    t = table("Queue", "Cluster KeySlot", "Cluster Nodes")
    for loc in locations:
        nodes = "\n".join(f"{n.node_id} {n.addr} ({n.role})" for n in loc.nodes) or "(slot not covered)"
        t.add_row(loc.queue, str(loc.slot), nodes)
    c.print(t)


@queue_app.command("inspect")
@clean_errors
def inspect(
    queues: Annotated[list[str], typer.Argument(help="Queue name(s).")],
    as_json: JsonOption = False,
    redis_url: RedisURLOption = None,
    cluster_addrs: ClusterAddrsOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
) -> None:
    """Size, tasks by state, today's counters, latency and memory of each queue."""

    async def go(insp: Inspector) -> list[QueueInfo]:
        return [await insp.get_queue_info(q) for q in queues]

    infos = with_inspector((redis_url, cluster_addrs, username, password), go)
    if as_json:
        echo_json(infos if len(infos) > 1 else infos[0])
        return
    c = console()
    for i, info in enumerate(infos):
        if i:
            c.print("\n" + "=" * 49 + "\n")
        print_queue_info(info)


def print_queue_info(info: QueueInfo) -> None:
    c = console()
    c.print("[bold]Queue Info[/bold]")
    print_lines(
        c,
        [
            ("Name", info.queue),
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
    t = table("processed", "failed", "error rate")
    t.add_row(str(info.processed), str(info.failed), error_rate(info.processed, info.failed))
    c.print(t)
    c.print()
    c.print("[bold]All-time Stats[/bold]")
    t = table("processed", "failed", "error rate")
    t.add_row(
        str(info.processed_total),
        str(info.failed_total),
        error_rate(info.processed_total, info.failed_total),
    )
    c.print(t)


@queue_app.command("history")
@clean_errors
def history(
    queues: Annotated[list[str], typer.Argument(help="Queue name(s).")],
    days: Annotated[int, typer.Option("--days", "-x", min=1, help="How many days back, today first.")] = 10,
    as_json: JsonOption = False,
    redis_url: RedisURLOption = None,
    cluster_addrs: ClusterAddrsOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
) -> None:
    """Processed and failed counts per UTC day."""

    async def go(insp: Inspector) -> list[list[DailyStats]]:
        return [await insp.history(q, days) for q in queues]

    stats = with_inspector((redis_url, cluster_addrs, username, password), go)
    if as_json:
        echo_json({q: s for q, s in zip(queues, stats, strict=True)})
        return
    c = console()
    for i, (q, rows) in enumerate(zip(queues, stats, strict=True)):
        if i:
            c.print("\n" + "=" * 49 + "\n")
        c.print(f"Queue: {q}\n", markup=False)
        t = table("date (UTC)", "processed", "failed", "error rate")
        for d in rows:
            t.add_row(d.date.isoformat(), str(d.processed), str(d.failed), error_rate(d.processed, d.failed))
        c.print(t)


@queue_app.command("pause")
@clean_errors
def pause(
    queues: Annotated[list[str], typer.Argument(help="Queue name(s).")],
    redis_url: RedisURLOption = None,
    cluster_addrs: ClusterAddrsOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
) -> None:
    """Pause queues: servers stop taking their tasks (running tasks finish)."""

    async def go(insp: Inspector) -> list[bool]:
        return [await insp.pause_queue(q) for q in queues]

    for q, changed in zip(
        queues, with_inspector((redis_url, cluster_addrs, username, password), go), strict=True
    ):
        typer.echo(f'Successfully paused queue "{q}"' if changed else f'Queue "{q}" was already paused')


@queue_app.command("unpause")
@clean_errors
def unpause(
    queues: Annotated[list[str], typer.Argument(help="Queue name(s).")],
    redis_url: RedisURLOption = None,
    cluster_addrs: ClusterAddrsOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
) -> None:
    """Unpause queues."""

    async def go(insp: Inspector) -> list[bool]:
        return [await insp.unpause_queue(q) for q in queues]

    for q, changed in zip(
        queues, with_inspector((redis_url, cluster_addrs, username, password), go), strict=True
    ):
        typer.echo(f'Successfully unpaused queue "{q}"' if changed else f'Queue "{q}" was not paused')


@queue_app.command("rm")
@clean_errors
def rm(
    queues: Annotated[list[str], typer.Argument(help="Queue name(s).")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Remove even if the queue has tasks.")] = False,
    redis_url: RedisURLOption = None,
    cluster_addrs: ClusterAddrsOption = None,
    username: UsernameOption = None,
    password: PasswordOption = None,
) -> None:
    """Remove queues and all their keys. A queue with tasks needs --force; one with active tasks
    is refused."""

    async def go(insp: Inspector) -> list[int]:
        return [await insp.delete_queue(q, force=force) for q in queues]

    for q, n in zip(queues, with_inspector((redis_url, cluster_addrs, username, password), go), strict=True):
        typer.echo(f'Successfully removed queue "{q}" ({n} keys deleted)')
