"""Keep the garbage collector's full passes off a long-running worker's event loop.

CPython runs a full (generation 2) collection whenever the objects that survived since the last one
reach a quarter of those already old, and each pass walks every tracked object while the event loop
waits. A worker serving 1,000 queues holds ~175,000 of them, almost all made at start-up (modules,
the per-queue state of every component) and alive until it stops: its full passes came every 10 to
20 s while idle and held the loop 80-90 ms each, the largest stalls a pick-up could fall into
(benchmarks/loop_lag.py, docs/benchmarks.md). Moving what exists once start-up has settled into the
permanent generation (``gc.freeze``) leaves the full passes only the objects made since.

Freezing leaves the full passes smaller, not rarer. The objects a server keeps making and keeping
for seconds (each queue watcher's blocking wait: a chain of coroutines, a future and a timer, renewed
every few seconds; ~33,000 objects at 1,000 queues) survive the two young collections and keep
meeting the quarter rule: a full pass every ~3 s while idle, 20-45 ms each on the benchmark VM, and
every loop stall over 10 ms that remained had one inside it. So after the freeze the automatic full
passes are switched off (generation 2's threshold raised out of reach) and the server runs one every
:data:`FULL_PASS_SECONDS` instead. Garbage that only a full pass finds (a reference cycle that
outlived two young collections) then waits at most that long. The young generations get smaller
thresholds too (:data:`YOUNG_THRESHOLD`, :data:`MIDDLE_THRESHOLD`): the generation-1 passes over
the watchers' objects on their way to generation 2 held the loop up to ~14 ms; smaller, more
frequent passes cut the callbacks over 3 ms in an idle 1,000-queue worker from 12-18 to 1-3 in 30 s,
for a little more collector time in all (569-579 against 439-546 ms in those 30 s). The thresholds
are put back when the server stops.

It is process-wide, so it runs only when ``Config.gc_freeze`` asks for it: the ``asynq-aio worker``
command, which owns its process, turns it on; an application embedding a Server decides for itself.
An object frozen here and dropped later is never collected if it sits in a reference cycle, so the
freeze runs once, after a ``gc.collect()`` has removed the start-up's garbage.
"""

from __future__ import annotations

import gc
import logging

import anyio

__all__ = ["FULL_PASS_SECONDS", "MIDDLE_THRESHOLD", "SETTLE_SECONDS", "YOUNG_THRESHOLD", "freeze_after_start"]

log = logging.getLogger("asynq_aio.server")

#: How long after the server starts the freeze waits: long enough for every queue's watcher and the
#: first background rounds to have made their long-lived objects.
SETTLE_SECONDS = 5.0
#: Seconds between the full passes the server runs itself once the automatic ones are off.
FULL_PASS_SECONDS = 60.0
#: Generation 2's threshold while the server times the full passes: never reached in practice.
_NO_AUTOMATIC_FULL_PASS = 1_000_000
#: The young generations' thresholds meanwhile (CPython's defaults are 700 and 10): smaller, more
#: frequent passes. Objects that live for seconds (the watchers' waits) now reach generation 2, where
#: only the timed pass looks at them, after fewer and shorter young passes.
YOUNG_THRESHOLD = 400
MIDDLE_THRESHOLD = 2


async def freeze_after_start() -> None:
    """Wait :data:`SETTLE_SECONDS`, collect once, then freeze every object that survived; from then
    on, until cancelled (the server stopping), run the full passes every :data:`FULL_PASS_SECONDS`
    in place of the collector's own."""
    await anyio.sleep(SETTLE_SECONDS)
    gc.collect()
    gc.freeze()
    log.info("garbage collector: %d start-up objects frozen", gc.get_freeze_count())
    before = gc.get_threshold()
    timed = (YOUNG_THRESHOLD, MIDDLE_THRESHOLD, _NO_AUTOMATIC_FULL_PASS)
    gc.set_threshold(*timed)
    try:
        while True:
            await anyio.sleep(FULL_PASS_SECONDS)
            gc.collect()
    finally:
        if gc.get_threshold() == timed:  # unless someone else has changed them since
            gc.set_threshold(*before)
