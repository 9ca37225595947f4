"""Serving a registry over HTTP from a daemon thread, with a handle to stop it.

prometheus-client's ``start_http_server`` returns the server and thread but no way to say "stop";
:class:`MetricsServer` adds that (tests and the exporter shut it down cleanly) and reports the
port actually bound, so ``port=0`` picks a free one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.registry import CollectorRegistry


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; ``close()`` (or ``with``) stops it."""

    server: WSGIServer
    thread: threading.Thread
    host: str

    @property
    def port(self) -> int:
        """The port actually bound (the free one picked when asked for port 0)."""
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        """The endpoint's URL, ``http://host:port/metrics`` (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving, close the socket and wait up to 5 s for the thread to end."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve_metrics(port: int, host: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread.

    For a worker: ``mux.use(WorkerMetrics()); serve_metrics(9100)`` before ``server.run(mux)``.
    Scrapes run on that thread and only read in-memory values, so they never wait on the event loop.
    """
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server=server, thread=thread, host=host)
