"""Worker-side metrics as a ServeMux middleware: how long handlers take, how many run now, and how
each run ended, per queue and task type.

The queue exporter sees what Redis holds; only the worker sees its handlers run. These series are
per process (each worker exports its own; Prometheus sums them), so they live in the worker's
registry and are served by the worker, e.g. with :func:`asynq_aio.metrics.serve_metrics`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.registry import CollectorRegistry

from asynq_aio._context import current_task
from asynq_aio._errors import PayloadValidationError, RevokeTask, SkipRetry
from asynq_aio._handler import Handler
from asynq_aio._task import Task

# Handlers range from milliseconds (a cache write) to many minutes (a video encode).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

OUTCOMES = ("succeeded", "failed", "skip_retry", "revoked", "invalid_payload", "cancelled")


def outcome_of(error: BaseException | None) -> str:
    """The outcome label for a handler that ended with ``error`` (None: it returned)."""
    if error is None:
        return "succeeded"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"  # timeout, deadline, cancel_processing or shutdown
    if isinstance(error, RevokeTask):
        return "revoked"
    if isinstance(error, PayloadValidationError):
        return "invalid_payload"
    if isinstance(error, SkipRetry):
        return "skip_retry"
    return "failed"


class WorkerMetrics:
    """A middleware: ``mux.use(WorkerMetrics())``.

    Exports ``asynq_worker_handler_duration_seconds`` (histogram), ``asynq_worker_tasks_in_flight``
    (gauge) and ``asynq_worker_tasks_total`` (counter with an ``outcome`` label), each labelled
    with ``queue`` and ``task_type``. One instance per registry: a second one on the same registry
    raises prometheus-client's duplicate-timeseries error.

    "failed" counts exceptions raised by the handler; the server's ``is_failure`` may still decide
    that one is not a failure for Redis's processed/failed statistics.
    """

    def __init__(
        self, registry: CollectorRegistry | None = REGISTRY, *, buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        labels = ["queue", "task_type"]
        self.duration = Histogram(
            "asynq_worker_handler_duration_seconds",
            "Seconds a handler ran, whatever its outcome.",
            labels,
            registry=registry,
            buckets=buckets,
        )
        self.in_flight = Gauge(
            "asynq_worker_tasks_in_flight", "Handlers running now in this worker.", labels, registry=registry
        )
        self.outcomes = Counter(
            "asynq_worker_tasks",
            "Handler runs by outcome: succeeded, failed, skip_retry, revoked, invalid_payload, cancelled.",
            [*labels, "outcome"],
            registry=registry,
        )

    def __call__(self, handler: Handler) -> Handler:
        async def measured(task: Task) -> None:
            try:
                queue = current_task().queue
            except LookupError:  # called outside a server (a test calling the mux directly)
                queue = ""
            in_flight = self.in_flight.labels(queue, task.type)
            error: BaseException | None = None
            in_flight.inc()
            started = time.perf_counter()
            try:
                await handler(task)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self.duration.labels(queue, task.type).observe(time.perf_counter() - started)
                in_flight.dec()
                self.outcomes.labels(queue, task.type, outcome_of(error)).inc()

        return measured
