"""``asynq-aio dev``: local development helpers, starting with a throwaway Redis Cluster.

``dev cluster up`` needs only ``redis-server`` on PATH (no Docker, no ``redis-cli``), so a
contributor can run the cluster tests and examples on a bare machine. The commands are thin: all
process and cluster handling lives in ``asynq_aio._devcluster``, which the test fixtures share.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from asynq_aio._devcluster import DevCluster, DevClusterError, NodeStatus, RedisServerNotFound

dev_app = typer.Typer(help="Local development helpers.", no_args_is_help=True)
cluster_app = typer.Typer(
    help="A local Redis Cluster (3 masters + 3 replicas) run from redis-server binaries.",
    no_args_is_help=True,
)
dev_app.add_typer(cluster_app, name="cluster")

_NODES = 6
_REPLICAS = 1

DirOption = Annotated[
    Path, typer.Option("--dir", help="Directory holding the nodes' configs, data, logs and pid files.")
]


def _fail(message: str) -> typer.Exit:
    """One line on stderr and exit code 1: a missing binary or a busy port is not a crash."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


@cluster_app.command("up")
def up(
    dir: DirOption = Path(".devcluster"),
    port_base: Annotated[int, typer.Option(help="First port; the nodes use 6 consecutive ports.")] = 7000,
    appendonly: Annotated[bool, typer.Option(help="Persist data with AOF across restarts.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for cluster_state:ok.")] = 60.0,
) -> None:
    """Start the cluster (or check the one already running in --dir) and print its addresses.

    The last line, ASYNQ_CLUSTER_ADDRS=..., is on stdout alone so `export $(asynq-aio dev cluster up)`
    works; progress goes to stderr.
    """
    cluster = DevCluster(
        dir, ports=range(port_base, port_base + _NODES), replicas=_REPLICAS, appendonly=appendonly
    )
    started = time.monotonic()
    try:
        cluster.start(timeout=timeout)
    except (RedisServerNotFound, DevClusterError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(
        f"Redis Cluster ok in {time.monotonic() - started:.1f}s: {cluster.n_masters} masters, "
        f"{len(cluster.ports) - cluster.n_masters} replicas, data in {cluster.base_dir}",
        err=True,
    )
    typer.echo(f"ASYNQ_CLUSTER_ADDRS={','.join(cluster.addrs)}")


@cluster_app.command("down")
def down(
    dir: DirOption = Path(".devcluster"),
    purge: Annotated[bool, typer.Option(help="Also delete the nodes' data, configs and logs.")] = False,
) -> None:
    """Stop the cluster recorded in --dir (SIGTERM, then SIGKILL after a grace period)."""
    try:
        cluster = DevCluster.from_dir(dir)
    except DevClusterError:
        typer.echo(f"no dev cluster in {dir}; nothing to stop", err=True)
        return
    cluster.stop(remove_data=purge)
    typer.echo(f"stopped {len(cluster.ports)} nodes" + (f" and removed their data in {dir}" if purge else ""))


def _slots(node: NodeStatus) -> str:
    return ",".join(f"{start}-{end}" if start != end else str(start) for start, end in node.slots)


@cluster_app.command("status")
def status(dir: DirOption = Path(".devcluster")) -> None:
    """Show each node's port, process, role, node ID, slots and cluster state; exit 1 if a node is down."""
    try:
        cluster = DevCluster.from_dir(dir)
    except DevClusterError as exc:
        raise _fail(str(exc)) from None
    table = Table(title=f"dev cluster in {cluster.base_dir}")
    for column in ("Port", "PID", "Role", "Node ID", "Slots", "State"):
        table.add_column(column, no_wrap=column != "Slots")
    for node in cluster.status():
        table.add_row(
            str(node.port),
            str(node.pid) if node.alive else "[red]down[/red]",
            node.role or "-",
            node.node_id or "-",
            _slots(node) or "-",
            node.cluster_state or "-",
        )
    Console().print(table)
    if not cluster.is_running():
        raise typer.Exit(1)
