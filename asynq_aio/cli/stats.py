"""``asynq-aio stats``: tasks by state and by queue, today's throughput and error rate, and a
summary of Redis (or of every Redis Cluster node)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asynq_aio._inspection import QueueInfo, RedisNodeInfo
from asynq_aio._inspector import Inspector
from asynq_aio.cli.common import ConnectionFlags, clean_errors, connection_flags
from asynq_aio.cli.render import (
    STATE_COLUMNS,
    JsonOption,
    console,
    echo_json,
    error_rate,
    fmt_bytes,
    jsonable,
    rate_table,
    table,
    with_inspector,
)


@dataclass(frozen=True, slots=True)
class Stats:
    """What ``asynq-aio stats`` shows, read at once: the queues, the Redis nodes, cluster info, and when."""

    queues: list[QueueInfo]
    nodes: list[RedisNodeInfo]
    cluster: dict[str, str]
    at: datetime

    def totals(self) -> dict[str, int]:
        """Tasks by state, summed over all queues."""
        return {s: sum(getattr(q, s) for q in self.queues) for s in STATE_COLUMNS}

    def processed(self) -> int:
        """Tasks processed today (UTC), summed over all queues."""
        return sum(q.processed for q in self.queues)

    def failed(self) -> int:
        """Tasks that failed today (UTC), summed over all queues."""
        return sum(q.failed for q in self.queues)


async def collect(insp: Inspector) -> Stats:
    """Read everything ``asynq-aio stats`` shows from Redis."""
    infos = await insp.get_queue_infos()
    nodes, cluster = await insp.redis_info()
    return Stats(infos, nodes, cluster, datetime.now(tz=UTC))


@clean_errors
@connection_flags
def stats(conn: ConnectionFlags, as_json: JsonOption = False) -> None:
    """Tasks by state and by queue, today's processed/failed/error rate, and Redis info."""
    st = with_inspector(conn, collect)
    if as_json:
        out: dict[str, Any] = {
            "states": st.totals(),
            "queues": jsonable(st.queues),
            "daily": {
                "date": st.at.date().isoformat(),
                "processed": st.processed(),
                "failed": st.failed(),
                "error_rate": error_rate(st.processed(), st.failed()),
            },
            "redis": {"nodes": jsonable(st.nodes), "cluster": st.cluster},
        }
        echo_json(out)
        return
    c = console()
    c.print("[bold]Task Count by State[/bold]")
    t = table(*STATE_COLUMNS)
    totals = st.totals()
    t.add_row(*(str(totals[s]) for s in STATE_COLUMNS))
    c.print(t)
    c.print()
    c.print("[bold]Task Count by Queue[/bold]")
    if st.queues:
        t = table("Queue", "Size", *STATE_COLUMNS, "Paused")
        for q in st.queues:
            t.add_row(
                q.queue + (" (paused)" if q.paused else ""),
                str(q.size),
                *(str(getattr(q, s)) for s in STATE_COLUMNS),
                str(q.paused).lower(),
            )
        c.print(t)
    else:
        c.print("No queues.")
    c.print()
    c.print(f"[bold]Daily Stats {st.at:%Y-%m-%d} UTC[/bold]")
    c.print(rate_table(st.processed(), st.failed()))
    c.print()
    if st.cluster:
        c.print("[bold]Redis Cluster Info[/bold]")
        t = table("cluster state", "known nodes", "size", "slots ok")
        t.add_row(
            st.cluster.get("cluster_state", "?"),
            st.cluster.get("cluster_known_nodes", "?"),
            st.cluster.get("cluster_size", "?"),
            st.cluster.get("cluster_slots_ok", "?"),
        )
        c.print(t)
        c.print()
    c.print("[bold]Redis Info[/bold]")
    columns = ("version", "uptime", "connections", "memory usage", "peak memory usage")
    t = table("node", "role", *columns) if st.cluster else table(*columns)
    for n in st.nodes:
        row = (
            n.version,
            f"{n.uptime_days} days",
            str(n.connections),
            fmt_bytes(n.memory_used),
            fmt_bytes(n.memory_peak),
        )
        t.add_row(*((f"{n.addr} {n.node_id}", n.role, *row) if st.cluster else row))
    c.print(t)
