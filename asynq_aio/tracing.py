"""OpenTelemetry tracing from enqueue to handler (the optional ``otel`` extra:
``pip install 'asynq-aio[otel]'``).

The trace context travels in the task's headers (``TaskMessage.headers``, field 15 of Asynq's
protobuf), written by the configured propagator (W3C ``traceparent``/``tracestate`` by default).
So a trace crosses processes, and Go programs that read or write those headers with OpenTelemetry
join the same trace.

- :class:`TracingEnqueueHook` (a Client enqueue hook) starts a PRODUCER span ``send <queue>`` for
  each task, injects its context into the stored headers and ends it when the write has finished.
- :class:`TracingMiddleware` (a ServeMux middleware) extracts that context and runs the handler in
  a CONSUMER span ``process <queue>`` whose parent is the producer span.

Attributes follow the OpenTelemetry messaging semantic conventions: ``messaging.system`` (``asynq``),
``messaging.operation.type``/``.name``, ``messaging.destination.name`` (the queue),
``messaging.message.id`` (the task ID) and ``messaging.message.body.size``, plus ``asynq.task.type``
and, on the consumer, ``asynq.task.retry_count``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from importlib.metadata import PackageNotFoundError, version

try:
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "asynq_aio.tracing needs opentelemetry-api, which is not installed: pip install 'asynq-aio[otel]'"
    ) from exc

from asynq_aio._client import OutgoingTask
from asynq_aio._context import current_task
from asynq_aio._handler import Handler
from asynq_aio._task import Task

__all__ = ["MESSAGING_SYSTEM", "TracingEnqueueHook", "TracingMiddleware"]

MESSAGING_SYSTEM = "asynq"
_SCOPE = "asynq_aio"
_CANCELLED = "cancelled (timeout, deadline, cancel_processing or shutdown)"


def _version() -> str | None:
    try:
        return version("asynq-aio")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return None


def _tracer(provider: TracerProvider | None) -> Tracer:
    return trace.get_tracer(_SCOPE, _version(), tracer_provider=provider)


def _propagator(given: TextMapPropagator | None) -> TextMapPropagator:
    # Read the global one per call when none was given: an app may configure propagation after it
    # built its Client and mux.
    return given if given is not None else propagate.get_global_textmap()


class TracingEnqueueHook:
    """``Client(opt, enqueue_hooks=[TracingEnqueueHook()])`` or ``client.add_enqueue_hook(...)``.

    The producer span's parent is whatever span is current at the enqueue (a web request's, say).
    The span is not made current itself: ``enqueue_many`` opens one per task at once, and each
    must be a sibling, not a child of the previous one.
    """

    def __init__(
        self, tracer_provider: TracerProvider | None = None, propagator: TextMapPropagator | None = None
    ) -> None:
        self._tracer = _tracer(tracer_provider)
        self._given_propagator = propagator

    def __call__(self, out: OutgoingTask) -> AbstractContextManager[object]:
        return self._span(out)

    @contextmanager
    def _span(self, out: OutgoingTask) -> Iterator[trace.Span]:
        span = self._tracer.start_span(
            f"send {out.queue}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "send",
                "messaging.operation.name": "enqueue",
                "messaging.destination.name": out.queue,
                "messaging.message.id": out.task_id,
                "messaging.message.body.size": len(out.task.payload),
                "asynq.task.type": out.task.type,
            },
        )
        _propagator(self._given_propagator).inject(out.headers, context=trace.set_span_in_context(span))
        try:
            yield span
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            span.end()


class TracingMiddleware:
    """``mux.use(TracingMiddleware(), ...)``: put it first, so the other middleware and the handler
    run inside the consumer span (spans the handler starts become its children).

    A task without trace headers (enqueued untraced, or by a program that does not propagate)
    starts a new trace.
    """

    def __init__(
        self, tracer_provider: TracerProvider | None = None, propagator: TextMapPropagator | None = None
    ) -> None:
        self._tracer = _tracer(tracer_provider)
        self._given_propagator = propagator

    def __call__(self, handler: Handler) -> Handler:
        async def traced(task: Task) -> None:
            parent = _propagator(self._given_propagator).extract(task.headers)
            attributes: dict[str, str | int] = {
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.message.body.size": len(task.payload),
                "asynq.task.type": task.type,
            }
            queue = ""
            try:
                ctx = current_task()
            except LookupError:  # called outside a server (a test calling the mux directly)
                pass
            else:
                queue = ctx.queue
                attributes["messaging.destination.name"] = ctx.queue
                attributes["messaging.message.id"] = ctx.id
                attributes["asynq.task.retry_count"] = ctx.retry_count
            with self._tracer.start_as_current_span(
                f"process {queue}" if queue else "process",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
            ) as span:
                try:
                    await handler(task)
                except asyncio.CancelledError:
                    # not an Exception, so OpenTelemetry would leave the status unset; a handler
                    # cut short by its timeout or deadline did fail
                    span.set_status(Status(StatusCode.ERROR, _CANCELLED))
                    raise

        return traced
