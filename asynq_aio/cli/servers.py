"""``asynq-aio server ls`` (live servers and their workers) and ``asynq-aio cron ls | history``
(scheduler entries and when they enqueued)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from asynq_aio._inspection import SchedulerEntryInfo, ServerInfo
from asynq_aio._inspector import Inspector
from asynq_aio.cli.common import ConnectionFlags, clean_errors, connection_flags
from asynq_aio.cli.render import (
    JsonOption,
    PageOption,
    console,
    echo_json,
    fmt_payload,
    fmt_relative,
    fmt_time,
    for_each,
    sections,
    table,
    with_inspector,
)

server_app = typer.Typer(help="Inspect running servers.", no_args_is_help=True)
cron_app = typer.Typer(help="Inspect periodic tasks (scheduler entries).", no_args_is_help=True)


@server_app.command("ls")
@clean_errors
@connection_flags
def server_ls(
    conn: ConnectionFlags,
    workers: Annotated[bool, typer.Option("--workers", "-w", help="Also list each running task.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List live servers: host, PID, state, busy workers, queues with weights, uptime."""

    async def go(insp: Inspector) -> list[ServerInfo]:
        return await insp.servers()

    servers = with_inspector(conn, go)
    if as_json:
        echo_json(servers)
        return
    c = console()
    if not servers:
        c.print("No running servers")
        return
    now = datetime.now(tz=UTC)
    t = table("Host", "PID", "State", "Active Workers", "Queues", "Started", "ID")
    for s in servers:
        queues = " ".join(f"{q}:{w}" for q, w in sorted(s.queues.items()))
        t.add_row(
            s.host,
            str(s.pid),
            s.status,
            f"{len(s.active_workers)}/{s.concurrency}",
            queues + (" (strict)" if s.strict_priority else ""),
            fmt_relative(s.started, now),
            s.id,
        )
    c.print(t)
    if workers:
        c.print()
        t = table("Server", "Task ID", "Type", "Queue", "Payload", "Started", "Deadline")
        for s in servers:
            for w in s.active_workers:
                t.add_row(
                    f"{s.host}:{s.pid}",
                    w.task_id,
                    w.task_type,
                    w.queue,
                    fmt_payload(w.task_payload),
                    fmt_relative(w.started, now),
                    fmt_time(w.deadline),
                )
        c.print(t)


@cron_app.command("ls")
@clean_errors
@connection_flags
def cron_ls(conn: ConnectionFlags, as_json: JsonOption = False) -> None:
    """List the periodic task entries of live schedulers."""

    async def go(insp: Inspector) -> list[SchedulerEntryInfo]:
        return await insp.scheduler_entries()

    entries = with_inspector(conn, go)
    if as_json:
        echo_json(entries)
        return
    c = console()
    if not entries:
        c.print("No scheduler entries")
        return
    now = datetime.now(tz=UTC)
    t = table("EntryID", "Spec", "Type", "Payload", "Options", "Next Enqueue", "Prev Enqueue")
    for e in entries:
        t.add_row(
            e.id,
            e.spec,
            e.task_type,
            fmt_payload(e.task_payload),
            ", ".join(e.options),
            fmt_relative(e.next_enqueue_at, now),
            fmt_relative(e.prev_enqueue_at, now) if e.prev_enqueue_at else "N/A",
        )
    c.print(t)


@cron_app.command("history")
@clean_errors
@connection_flags
def cron_history(
    conn: ConnectionFlags,
    entry_ids: Annotated[list[str], typer.Argument(metavar="ENTRY_ID...", help="Scheduler entry ID(s).")],
    page: PageOption = 1,
    size: Annotated[int, typer.Option("--size", "-n", min=1, help="Events per page.")] = 30,
    as_json: JsonOption = False,
) -> None:
    """When a scheduler entry enqueued which task, newest first."""
    events = for_each(
        conn, entry_ids, lambda insp, e: insp.list_scheduler_enqueue_events(e, page=page, size=size)
    )
    if as_json:
        echo_json(dict(events))
        return
    c = console()
    for entry, evs in sections(c, events):
        c.print(f"Entry: {entry}\n", markup=False)
        if not evs:
            c.print("No enqueue events")
            continue
        t = table("Enqueued At", "TaskID")
        for ev in evs:
            t.add_row(fmt_time(ev.enqueued_at), ev.task_id)
        c.print(t)
