"""``asynq-aio web``: serve the web dashboard (:mod:`asynq_aio.web`) with uvicorn.

It listens on 127.0.0.1 by default. The dashboard has no login of its own, so listening on any
other address also needs ``--allow-remote``: the user says twice that the network may reach it.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from asynq_aio.cli.common import ConnectionFlags, clean_errors, connection_flags, fail

__all__ = ["is_loopback", "web"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@clean_errors
@connection_flags
def web(
    conn: ConnectionFlags,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8080,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Show everything, change nothing (actions refused with 403).")
    ] = False,
    root_path: Annotated[
        str, typer.Option("--root-path", help="Path prefix a reverse proxy serves the dashboard under.")
    ] = "",
    allow_remote: Annotated[
        bool,
        typer.Option("--allow-remote", help="Allow a non-loopback --host (the dashboard has no login)."),
    ] = False,
    refresh: Annotated[
        float, typer.Option("--refresh", min=0.5, help="Seconds between live figure updates.")
    ] = 5.0,
) -> None:
    """Serve the web dashboard: queues, tasks, servers, scheduler entries and Redis, live."""
    try:
        import uvicorn

        from asynq_aio.web import create_app
    except ImportError as exc:
        raise fail(f"the dashboard needs the web extra: pip install 'asynq-aio[web]' ({exc})") from None
    if not is_loopback(host) and not allow_remote:
        raise fail(
            f"--host {host} is reachable from other machines and the dashboard has no login: "
            "put it behind an authenticating proxy and add --allow-remote (see docs/dashboard.md)"
        )
    if root_path and (not root_path.startswith("/") or root_path.endswith("/")):
        raise fail(f"--root-path must start with / and not end with one, got {root_path!r}")
    opt = conn.options()
    if conn.uses_default:
        typer.echo(f"(no --redis-url or ASYNQ_REDIS_URL: reading {opt.describe()})", err=True)
    app = create_app(opt, read_only=read_only, refresh_seconds=refresh)
    mode = "read-only" if read_only else "read-write"
    typer.echo(
        f"asynq-aio dashboard ({mode}) for {opt.describe()} on http://{host}:{port}{root_path}/", err=True
    )
    uvicorn.run(app, host=host, port=port, root_path=root_path, log_level="warning", proxy_headers=False)
