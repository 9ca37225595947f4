"""What the blocking client costs per enqueue: asynq_aio.sync.Client against asynq_aio.Client.

One caller, one enqueue after another (latency-bound: each waits for its reply), ``--n`` enqueues
per client per round on a private single redis-server started on a free port. The two clients
alternate over ``--rounds`` rounds (which goes first alternates too), so drift of the machine hits
both alike. Prints the median microseconds per enqueue of each and their difference, and writes the
same text to benchmarks/results/sync-enqueue.txt. Each round also times ``--n`` calls of a no-op
coroutine through the sync client: the cost of crossing to the loop thread and back, alone.
Run: ``.venv/bin/python -m benchmarks.sync_enqueue``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from pathlib import Path

from asynq_aio import Client, Task, parse_redis_url
from asynq_aio.sync import Client as SyncClient
from benchmarks.procs import SingleRedis

RESULT = Path(__file__).parent / "results" / "sync-enqueue.txt"


async def async_round(client: Client, queue: str, n: int) -> float:
    """Microseconds per enqueue, awaited one after another."""
    t0 = time.perf_counter()
    for i in range(n):
        await client.enqueue(Task("bench:sync", str(i).encode()), queue=queue)
    return (time.perf_counter() - t0) / n * 1e6


def sync_round(client: SyncClient, queue: str, n: int) -> float:
    """Microseconds per enqueue, called one after another from this (loop-less) thread."""
    t0 = time.perf_counter()
    for i in range(n):
        client.enqueue(Task("bench:sync", str(i).encode()), queue=queue)
    return (time.perf_counter() - t0) / n * 1e6


def handoff_round(client: SyncClient, n: int) -> float:
    """Microseconds per call of a coroutine that does nothing: the cost of the thread hand-off alone."""

    async def nothing(_: Client) -> None:
        return None

    t0 = time.perf_counter()
    for _ in range(n):
        client.run(nothing)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=5000, help="enqueues per client per round")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    redis = SingleRedis()
    try:
        opt = parse_redis_url(redis.url)
        with asyncio.Runner() as runner, SyncClient(opt) as sync_client:
            async_client = Client(opt)
            # warm-up: connections opened, queue registered, scripts loaded
            runner.run(async_round(async_client, "bench-async", 200))
            sync_round(sync_client, "bench-sync", 200)
            a_us: list[float] = []
            s_us: list[float] = []
            h_us: list[float] = []
            for r in range(args.rounds):
                redis.flush()
                if r % 2 == 0:
                    a_us.append(runner.run(async_round(async_client, "bench-async", args.n)))
                    s_us.append(sync_round(sync_client, "bench-sync", args.n))
                else:
                    s_us.append(sync_round(sync_client, "bench-sync", args.n))
                    a_us.append(runner.run(async_round(async_client, "bench-async", args.n)))
                h_us.append(handoff_round(sync_client, args.n))
            runner.run(async_client.aclose())
        version = redis.version()
    finally:
        redis.stop()
    a, s = statistics.median(a_us), statistics.median(s_us)

    def each(values: list[float]) -> str:
        return ", ".join(f"{x:.1f}" for x in values)

    lines = [
        f"sync vs async enqueue, one caller, {args.n} sequential enqueues per client per round, "
        f"{args.rounds} interleaved rounds, local single Redis {version}, Python {platform.python_version()}",
        f"async asynq_aio.Client        median {a:7.1f} us/enqueue  rounds {each(a_us)}",
        f"sync  asynq_aio.sync.Client   median {s:7.1f} us/enqueue  rounds {each(s_us)}",
        f"hand-off alone (sync run() of a no-op)  median {statistics.median(h_us):7.1f} us/call  "
        f"rounds {each(h_us)}",
        f"overhead of the sync client: {s - a:+.1f} us per enqueue ({(s / a - 1) * 100:+.0f}%)",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
