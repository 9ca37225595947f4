"""``asynq-aio metrics``: a Prometheus exporter of every queue, on a single Redis or a Redis Cluster.

Asynq's Go exporter takes one Redis address, so it cannot read a cluster; this one uses the
Inspector, which sends each queue's reads to the node that owns the queue's slot. It refreshes a
snapshot every ``--interval`` seconds on its event loop and serves the latest one on
``/metrics`` from a thread, so a scrape never waits for Redis.
"""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import anyio
import typer

from asynq_aio.cli.common import ConnectionFlags, clean_errors, connection_flags, fail, run_async


@clean_errors
@connection_flags(after="queue")
def metrics(
    conn: ConnectionFlags,
    port: Annotated[int, typer.Option(help="Port for /metrics (0 picks a free one).")] = 9876,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    interval: Annotated[float, typer.Option(help="Seconds between reads of every queue.")] = 5.0,
    max_age: Annotated[
        float | None,
        typer.Option(
            help="Drop the queue metrics when the last good read is older than this many seconds "
            "(default: 5 x --interval)."
        ),
    ] = None,
    memory: Annotated[
        bool, typer.Option(help="Export the sampled memory estimate per queue (a few more reads).")
    ] = True,
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="Export only this queue; repeat for more (default: all)."),
    ] = None,
    log_level: Annotated[str, typer.Option(envvar="ASYNQ_LOG_LEVEL")] = "INFO",
) -> None:
    """Serve Prometheus metrics of every queue (Asynq's metric names) until SIGINT/SIGTERM."""
    try:  # the optional extra: its absence is one clear line, not a traceback
        from asynq_aio.metrics import QueueMetricsExporter, serve_metrics
    except ImportError as exc:
        raise fail(str(exc)) from None
    from prometheus_client.registry import CollectorRegistry

    if interval <= 0:
        raise fail(f"--interval must be positive, got {interval}")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opt = conn.options()

    async def go() -> None:
        registry = CollectorRegistry()
        exporter = QueueMetricsExporter(
            opt,
            interval=interval,
            memory=memory,
            max_age=max_age if max_age is not None else 5 * interval,
            registry=registry,
            queues=queue or None,
        )
        async with exporter:
            with serve_metrics(port, host, registry) as server:
                typer.echo(f"serving metrics of {opt.describe()} on {server.url}", err=True)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(exporter.run)
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:
                            break
                    tg.cancel_scope.cancel()
        typer.echo("stopped", err=True)

    run_async(go)
