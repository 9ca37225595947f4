"""``asynq-aio dash``: a live terminal dashboard of every queue, refreshed every second.

``--once`` renders a single frame and exits (scripts, tests, a quick look over ssh)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import anyio
import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from asynq_aio._inspection import QueueInfo, ServerInfo
from asynq_aio._inspector import Inspector
from asynq_aio.cli.common import ConnectionFlags, clean_errors, connection_flags
from asynq_aio.cli.render import console, error_rate, fmt_duration, table, with_inspector


@dataclass(frozen=True, slots=True)
class Frame:
    """One refresh of the dashboard: the queues and live servers, and when they were read (``at`` is
    monotonic, for throughput between frames; ``when`` is the wall clock shown)."""

    at: float  # monotonic
    when: datetime
    queues: list[QueueInfo]
    servers: list[ServerInfo]


async def snapshot(insp: Inspector) -> Frame:
    """Read one frame: every queue's info and the live servers."""
    return Frame(time.monotonic(), datetime.now(tz=UTC), await insp.get_queue_infos(), await insp.servers())


def render(frame: Frame, prev: Frame | None, where: str) -> RenderableType:
    """One screen: a header line, the queues with sizes and throughput, and the live servers."""
    rates: dict[str, str] = {}
    if prev is not None and frame.at > prev.at:
        before = {q.queue: q.processed_total for q in prev.queues}
        for q in frame.queues:
            if q.queue in before:
                rates[q.queue] = f"{max(0, q.processed_total - before[q.queue]) / (frame.at - prev.at):.1f}/s"
    t = table(
        "Queue", "State", "Size", "Pending", "Active", "Scheduled", "Retry", "Archived", "Completed",
        "Aggregating", "Latency", "Processed", "Failed", "Error Rate", "Throughput",
    )  # fmt: skip
    for q in frame.queues:
        t.add_row(
            q.queue,
            "paused" if q.paused else "run",
            str(q.size),
            str(q.pending),
            str(q.active),
            str(q.scheduled),
            str(q.retry),
            str(q.archived),
            str(q.completed),
            str(q.aggregating),
            fmt_duration(q.latency),
            str(q.processed),
            str(q.failed),
            error_rate(q.processed, q.failed),
            rates.get(q.queue, "-"),
        )
    busy = sum(len(s.active_workers) for s in frame.servers)
    slots = sum(s.concurrency for s in frame.servers)
    header = Text(f"asynq-aio dash · {where} · {frame.when:%Y-%m-%d %H:%M:%S} UTC", style="bold")
    footer = Text(
        f"{len(frame.queues)} queues · {len(frame.servers)} servers · {busy}/{slots} workers busy"
        " · processed/failed are today's (UTC) · Ctrl-C to quit"
    )
    body: RenderableType = t if frame.queues else Text("No queues.")
    return Group(header, Text(""), body, Text(""), footer)


@clean_errors
@connection_flags
def dash(
    conn: ConnectionFlags,
    once: Annotated[bool, typer.Option("--once", help="Render one frame and exit.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")] = 1.0,
) -> None:
    """A live dashboard: queues with sizes by state, latency, today's counts and throughput."""
    where = conn.options().describe()

    async def go(insp: Inspector) -> None:
        frame = await snapshot(insp)
        c = console()
        if once:
            c.print(render(frame, None, where))
            return
        with Live(render(frame, None, where), console=c, refresh_per_second=4, screen=False) as live:
            while True:
                await anyio.sleep(interval)
                prev, frame = frame, await snapshot(insp)
                live.update(render(frame, prev, where))

    try:
        with_inspector(conn, go)
    except KeyboardInterrupt:
        return
