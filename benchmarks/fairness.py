"""Fairness between tenants: one huge tenant queue and many small ones, served by one worker.

The huge tenant holds ``--huge`` pending tasks (20,000), each of ``--small`` tenants (50) holds
``--per-small`` (10); the worker runs with concurrency 10 and handlers that take ``--handler-ms``
(10 ms, a handler doing some I/O). Measured: the time from the worker starting to serve until the
last small tenant's last task starts, and how many of the huge tenant's tasks started by then.
Two configurations, interleaved round by round on a flushed Redis:

* ``pattern``: ``Config(queues={"tenant:*": 1})``, the tenants in rotation inside the pattern;
* ``literal``: the 51 queues listed one by one with weight 1 (a weighted random draw among those
  that may have work, as before patterns existed);
* ``shared`` (with ``--shared``): no per-tenant queues at all, every task in one queue, the huge
  tenant's enqueued first: the baseline that per-tenant queues exist to avoid.

    python -m benchmarks.fairness [--rounds 3] [--cluster]

Prints a table and writes it to benchmarks/results/fairness.txt.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "fairness.txt"
CONCURRENCY = 10


def _opt(url: str) -> Any:
    from asynq_aio import RedisClientOpt, RedisClusterClientOpt

    if url.startswith("cluster://"):
        return RedisClusterClientOpt(addrs=url.removeprefix("cluster://").split(","))
    return RedisClientOpt(addr=url.removeprefix("redis://").split("/")[0])


async def _fill(url: str, huge: int, small: int, per_small: int, shared: bool) -> list[str]:
    from asynq_aio import Client, Task

    names = ["tenant:big", *(f"tenant:s{i:03d}" for i in range(small))]
    async with Client(_opt(url)) as client:
        for q in names:
            n = huge if q == "tenant:big" else per_small
            kind = "huge" if q == "tenant:big" else "small"
            for first in range(0, n, 1000):
                tasks = [Task(kind, b"") for _ in range(first, min(n, first + 1000))]
                await client.enqueue_many(tasks, queue="shared" if shared else q)
    return ["shared"] if shared else names


async def _serve(url: str, queues: dict[str, int], smalls: int, handler_s: float) -> tuple[float, int]:
    from asynq_aio import Config, Server, Task

    done = anyio.Event()
    counts = {"huge": 0, "small": 0}
    at_done: list[int] = []

    async def handler(task: Task) -> None:
        counts[task.type] += 1
        if task.type == "small" and counts["small"] == smalls:
            at_done.append(counts["huge"])
            done.set()
        await anyio.sleep(handler_s)

    cfg = Config(queues=queues, concurrency=CONCURRENCY, shutdown_timeout=1.0)
    async with Server(_opt(url), cfg).serve(handler):
        started = time.monotonic()
        with anyio.fail_after(600):
            await done.wait()
        took = time.monotonic() - started
    return took, at_done[0]


def measure(url: str, flush: Any, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    flush()
    names = anyio.run(_fill, url, args.huge, args.small, args.per_small, variant == "shared")
    queues = {"tenant:*": 1} if variant == "pattern" else dict.fromkeys(names, 1)
    took, huge_started = anyio.run(_serve, url, queues, args.small * args.per_small, args.handler_ms / 1000)
    return {"variant": variant, "seconds": took, "huge_started": huge_started}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--huge", type=int, default=20_000)
    ap.add_argument("--small", type=int, default=50)
    ap.add_argument("--per-small", type=int, default=10)
    ap.add_argument("--handler-ms", type=float, default=10.0)
    ap.add_argument("--cluster", action="store_true", help="also on a 3-master cluster")
    ap.add_argument("--shared", action="store_true", help="also the one-shared-queue baseline")
    args = ap.parse_args(argv)
    variants = ["pattern", "literal", *(["shared"] if args.shared else [])]

    from benchmarks.procs import ClusterRedis, SingleRedis

    single = SingleRedis()
    cluster = ClusterRedis() if args.cluster else None
    targets: list[tuple[str, str, Any]] = [("single", single.url, single.flush)]
    if cluster is not None:
        targets.append(("cluster", cluster.url, cluster.flush))
    rows: list[dict[str, Any]] = []
    load_start = os.getloadavg()
    try:
        for target, url, flush in targets:
            for r in range(args.rounds):
                order = variants if r % 2 == 0 else variants[::-1]
                for variant in order:
                    row = {"target": target, "round": r + 1, **measure(url, flush, variant, args)}
                    rows.append(row)
                    print(row, flush=True)
        version = single.version()
    finally:
        single.stop()
        if cluster is not None:
            cluster.stop()
    lines = [
        f"fairness: 1 huge tenant ({args.huge:,} tasks) + {args.small} small tenants "
        f"({args.per_small} tasks each), concurrency {CONCURRENCY}, handlers {args.handler_ms:g} ms, "
        f"{args.rounds} interleaved rounds per variant",
        f"Redis {version}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {load_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end",
        "time = worker start to the last small tenant's last task starting; huge = the huge tenant's "
        "tasks started by then",
        "",
        "| target | variant | median s | rounds s | median huge started | rounds huge |",
        "|---|---|---:|---|---:|---|",
    ]
    for target, _, _ in targets:
        for variant in variants:
            mine = [r for r in rows if r["target"] == target and r["variant"] == variant]
            secs = [r["seconds"] for r in mine]
            huge = [r["huge_started"] for r in mine]
            lines.append(
                f"| {target} | {variant} | {statistics.median(secs):.2f} | "
                f"{', '.join(f'{s:.2f}' for s in secs)} | {statistics.median(huge):.0f} | "
                f"{', '.join(str(h) for h in huge)} |"
            )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    OUT.write_text(text)
    print(f"written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
