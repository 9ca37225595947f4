"""What durable enqueue costs: enqueues per second with and without ``Client(durable=True)``.

Starts its own 6-node DevCluster (3 masters, 1 replica each) on free ports, then for each mode runs
``--n`` enqueues one after another (latency-bound) and the same number from ``--concurrency``
coroutines (throughput-bound), alternating the modes over ``--rounds`` rounds, and prints the median
rate of each. Run: ``.venv/bin/python -m benchmarks.durable_enqueue``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from asynq_aio import Client, RedisClusterClientOpt, Task
from asynq_aio._devcluster import DevCluster, find_free_port_base


async def sequential(client: Client, queue: str, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        await client.enqueue(Task("bench:durable", str(i).encode()), queue=queue)
    return n / (time.perf_counter() - t0)


async def concurrent(client: Client, queue: str, n: int, workers: int) -> float:
    left = iter(range(n))

    async def worker() -> None:
        for i in left:
            await client.enqueue(Task("bench:durable", str(i).encode()), queue=queue)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return n / (time.perf_counter() - t0)


async def batched(client: Client, queue: str, n: int, batch: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        await client.enqueue_many(
            [Task("bench:durable", str(i).encode()) for i in range(start, min(n, start + batch))], queue=queue
        )
    return n / (time.perf_counter() - t0)


async def run(addrs: list[str], n: int, workers: int, rounds: int) -> None:
    opt = RedisClusterClientOpt(addrs=addrs)
    results: dict[tuple[str, str], list[float]] = {}
    async with Client(opt) as plain, Client(opt, durable=True) as durable:
        for client in (plain, durable):  # warm up connections and script caches
            await sequential(client, "bench_warm", 50)
        for _ in range(rounds):
            for mode, client in (("plain", plain), ("durable", durable)):
                queue = f"bench_{uuid.uuid4().hex[:6]}"
                results.setdefault((mode, "sequential"), []).append(await sequential(client, queue, n))
                results.setdefault((mode, f"{workers} concurrent"), []).append(
                    await concurrent(client, queue, n, workers)
                )
                results.setdefault((mode, "enqueue_many x100"), []).append(
                    await batched(client, queue, n, 100)
                )
    print(f"durable enqueue cost: {n} enqueues per run, median of {rounds} rounds, 3-master cluster")
    print(f"{'pattern':<22}{'plain /s':>12}{'durable /s':>12}{'durable/plain':>15}")
    for pattern in ("sequential", f"{workers} concurrent", "enqueue_many x100"):
        p = statistics.median(results[("plain", pattern)])
        d = statistics.median(results[("durable", pattern)])
        print(f"{pattern:<22}{p:>12.0f}{d:>12.0f}{d / p:>14.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base_dir = Path(tempfile.mkdtemp(prefix="asynq-aio-bench-durable-"))
    base = find_free_port_base(6)
    cluster = DevCluster(base_dir, ports=range(base, base + 6), appendonly=False)
    try:
        cluster.start()
        asyncio.run(run(cluster.addrs, args.n, args.concurrency, args.rounds))
    finally:
        cluster.stop(remove_data=True)
        shutil.rmtree(base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
