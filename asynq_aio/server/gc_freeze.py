"""Keep the garbage collector's full passes off a long-running worker's event loop.

CPython runs a full (generation 2) collection whenever the objects that survived since the last one
reach a quarter of those already old, and each pass walks every tracked object while the event loop
waits. A worker serving 1,000 queues holds ~175,000 of them, almost all made at start-up (modules,
the per-queue state of every component) and alive until it stops: its full passes came every 10 to
20 s while idle and held the loop 80-90 ms each, the largest stalls a pick-up could fall into
(benchmarks/loop_lag.py, docs/benchmarks.md). Moving what exists once start-up has settled into the
permanent generation (``gc.freeze``) leaves the full passes only the objects made since.

It is process-wide, so it runs only when ``Config.gc_freeze`` asks for it: the ``asynq-aio worker``
command, which owns its process, turns it on; an application embedding a Server decides for itself.
An object frozen here and dropped later is never collected if it sits in a reference cycle, so the
freeze runs once, after a ``gc.collect()`` has removed the start-up's garbage.
"""

from __future__ import annotations

import gc
import logging

import anyio

__all__ = ["SETTLE_SECONDS", "freeze_after_start"]

log = logging.getLogger("asynq_aio.server")

#: How long after the server starts the freeze waits: long enough for every queue's watcher and the
#: first background rounds to have made their long-lived objects.
SETTLE_SECONDS = 5.0


async def freeze_after_start() -> None:
    """Wait :data:`SETTLE_SECONDS`, collect once, then freeze every object that survived."""
    await anyio.sleep(SETTLE_SECONDS)
    gc.collect()
    gc.freeze()
    log.info("garbage collector: %d start-up objects frozen", gc.get_freeze_count())
