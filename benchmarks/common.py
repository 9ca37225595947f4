"""What every benchmark driver shares: the command line, the handler bookkeeping, the result line.

Standard library only: the arq driver runs in its own virtualenv (arq pins redis-py < 6, which would
downgrade the project's redis-py), so nothing here may import the project or a peer.

Each driver (``benchmarks/drv_<system>.py``) is started as a subprocess by ``benchmarks.run`` in one
of three roles, and prints one ``RESULT {json}`` line on stdout at the end:

* ``produce``  enqueue ``--n`` tasks (one at a time from ``--conc`` coroutines, or in batches) and
  report the rate (and, one at a time, each call's latency as ``call_p50_ms`` / ``call_p99_ms``);
* ``work``     run a worker until it has run ``--expect`` handlers (or until SIGTERM when ``--expect``
  is 0) and report when the first handler started and the last one finished;
* ``trickle``  enqueue ``--n`` tasks one by one, ``--gap`` seconds apart, each carrying its enqueue
  timestamp, so an idle worker's pick-up latency can be read in the handler.

``READY`` is printed on stdout once a worker is connected and about to fetch.

Go Asynq's driver (``benchmarks/go/main.go``) speaks the same protocol; keep the two in step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

PAD = "x" * 48  # every payload carries the same ~100 bytes of JSON


def payload(i: int, ts: float = 0.0) -> dict[str, Any]:
    return {"i": i, "ts": ts, "name": f"user-{i}", "tags": ["a", "b"], "pad": PAD}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["produce", "work", "trickle"])
    p.add_argument("--url", required=True, help="redis://host:port/db, or cluster://h:p,h:p")
    p.add_argument("--queue", default="bench", help="comma-separated for several queues")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--conc", type=int, default=64)
    p.add_argument("--mode", default="one", choices=["one", "many"])
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--expect", type=int, default=0)
    p.add_argument("--handler", default="noop", choices=["noop", "sleep", "pydantic", "latency", "hold"])
    p.add_argument("--gap", type=float, default=0.02)
    p.add_argument("--sleep", type=float, default=0.01)
    p.add_argument("--process-in", type=float, default=0.0, help="schedule tasks this far ahead")
    p.add_argument(
        "--dequeue-batch", type=int, default=0, help="asynq-aio Config.dequeue_batch (0 = default)"
    )
    p.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    p.add_argument("--profile", default="", help="asynq-aio worker: write a pyinstrument HTML report here")
    return p.parse_args(argv)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process (this one by default), from /proc; 0 where that is missing."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (Python's round-half-even), as the runner and the Go driver read it."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


# Milliseconds each ``one(i)`` call of produce_concurrently took. Recorded here rather than by each
# driver so that every Python driver's one-at-a-time enqueue reports per-call latency the same way
# (see emit), without a change to each driver.
CALL_MS: list[float] = []


def emit(kind: str, data: Any = None) -> None:
    """Print one protocol line; a produce RESULT also gets the per-call enqueue percentiles."""
    if kind == "RESULT" and CALL_MS and isinstance(data, dict) and "call_p50_ms" not in data:
        data = {**data, "call_p50_ms": pct(CALL_MS, 50), "call_p99_ms": pct(CALL_MS, 99)}
    line = kind if data is None else f"{kind} {json.dumps(data)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Tally:
    """Counts handler runs in a worker process; ``done`` is set when ``expect`` have finished."""

    def __init__(self, expect: int, hold: bool = False) -> None:
        self.expect = expect
        self.hold = hold
        self.count = 0
        self.first_start = 0.0
        self.last_end = 0.0
        self.latencies: list[float] = []
        self.started_count = 0
        self.done = asyncio.Event()

    def started(self, ts: float = 0.0, now: float = 0.0) -> None:
        now = now or time.time()
        if not self.first_start:
            self.first_start = now
        if ts:
            self.latencies.append(now - ts)
        self.started_count += 1
        if self.hold and self.started_count >= self.expect:
            self.done.set()  # "hold" handlers never finish: done when all are in flight

    def finished(self) -> None:
        self.count += 1
        self.last_end = time.time()
        if self.expect and self.count >= self.expect:
            self.done.set()

    def result(self, **extra: Any) -> dict[str, Any]:
        span = self.last_end - self.first_start
        return {
            "count": self.count,
            "started": self.started_count,
            "first_start": self.first_start,
            "last_end": self.last_end,
            "rate": (self.count / span) if span > 0 and self.count > 1 else 0.0,
            "latencies": self.latencies,
            "rss": rss_bytes(),
            **extra,
        }


async def wait_done_or_signal(tally: Tally) -> None:
    """Return when the tally is complete, or on SIGTERM/SIGINT (for ``--expect 0``)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.ensure_future(tally.done.wait()), asyncio.ensure_future(stop.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()


async def produce_concurrently(n: int, conc: int, one: Callable[[int], Coroutine[Any, Any, Any]]) -> float:
    """Run ``one(i)`` for i in 0..n-1 from ``conc`` coroutines, each awaiting its calls in turn.

    Returns the elapsed seconds. Each call's own duration goes to CALL_MS: with ``conc`` 1 that is
    the latency one caller sees per enqueue.
    """
    per = [range(k, n, conc) for k in range(conc)]

    async def lane(idx: range) -> None:
        for i in idx:
            c0 = time.perf_counter()
            await one(i)
            CALL_MS.append((time.perf_counter() - c0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(lane(r) for r in per))
    return time.perf_counter() - t0


async def trickle(n: int, gap: float, one: Callable[[int, float], Coroutine[Any, Any, Any]]) -> None:
    """Enqueue n tasks one at a time, ``gap`` seconds apart, each stamped with its enqueue time."""
    for i in range(n):
        await one(i, time.time())
        await asyncio.sleep(gap)


def run_main(main: Callable[[], Coroutine[Any, Any, None]], loop: str) -> None:
    if loop == "uvloop":
        try:
            import uvloop

            uvloop.run(main())
            return
        except ImportError:
            pass
    asyncio.run(main())


def queues(args: argparse.Namespace) -> list[str]:
    return [q for q in args.queue.split(",") if q]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
