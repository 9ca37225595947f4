"""Prometheus metrics for asynq-aio (the optional ``metrics`` extra: ``pip install 'asynq-aio[metrics]'``).

- :class:`QueueMetricsExporter` / :class:`QueueMetricsCollector`: queue sizes per state, latency,
  memory, processed/failed totals and paused flags, with the names of Asynq's Go collector, read
  from a single Redis or a Redis Cluster (``asynq-aio metrics`` runs one as a server).
- :class:`WorkerMetrics`: a ServeMux middleware with handler duration, in-flight and outcome
  metrics per queue and task type.
- :func:`serve_metrics`: a ``/metrics`` endpoint on a daemon thread.
"""

from __future__ import annotations

try:
    import prometheus_client as _prometheus_client
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "asynq_aio.metrics needs prometheus-client, which is not installed: pip install 'asynq-aio[metrics]'"
    ) from exc

from asynq_aio.metrics.http import MetricsServer, serve_metrics
from asynq_aio.metrics.queues import STATES, QueueMetricsCollector, QueueMetricsExporter, QueueSnapshot
from asynq_aio.metrics.worker import OUTCOMES, WorkerMetrics, outcome_of

del _prometheus_client

__all__ = [
    "OUTCOMES",
    "STATES",
    "MetricsServer",
    "QueueMetricsCollector",
    "QueueMetricsExporter",
    "QueueSnapshot",
    "WorkerMetrics",
    "outcome_of",
    "serve_metrics",
]
