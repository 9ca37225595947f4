"""What an idle process pays for one call: the same call back to back and after a pause.

Pick-up latency is measured on an idle worker fed by an idle producer, one task every 20 ms. On
this kind of machine (a shared VM) a process that has slept for milliseconds runs its next few
hundred microseconds of Python several times slower than one kept busy, and so does the Redis it
wakes. This separates that from asynq-aio's own cost, with three calls, each ``--n`` times back to
back and ``--n`` times with ``--gap`` seconds of sleep before each:

- a raw ``PING`` on a plain asyncio socket (no redis-py, no asynq-aio): the floor;
- ``Client.enqueue`` of one task, split into the time before its script batch is handed to the
  connection (options, message, coalescer, transport) and the rest (the round trip and reply);
- ``Broker.dequeue`` of one task: the worker's half of a pick-up.

    python -m benchmarks.idle_cost [--n 300] [--gap 0.02]

Medians and p90 in milliseconds are printed and written to benchmarks/results/idle-cost-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

import asynq_aio.protocol._redis.transport as transport_module
from asynq_aio import Client, Task, parse_redis_url
from asynq_aio.protocol.session import RedisSession
from benchmarks.procs import SingleRedis

RESULTS = Path(__file__).parent / "results"


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
    }


async def _timed(n: int, gap: float, call: Callable[[], Awaitable[Any]]) -> list[float]:
    out = []
    for _ in range(n):
        if gap:
            await asyncio.sleep(gap)
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    redis = SingleRedis()
    rows: dict[str, Any] = {}
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", redis.port)

        async def ping() -> None:
            writer.write(b"*1\r\n$4\r\nPING\r\n")
            await reader.readuntil(b"\r\n")

        # The enqueue's split: the moment its batch reaches the direct send path.
        handed: list[float] = []
        send = transport_module.send_batch

        async def marked_send(*a: Any, **k: Any) -> Any:
            handed.append(time.perf_counter())
            return await send(*a, **k)

        transport_module.send_batch = marked_send  # type: ignore[assignment]
        opt = parse_redis_url(redis.url)
        async with Client(opt) as client:
            session = RedisSession.open(opt)
            broker = session.broker()
            await client.enqueue(Task("warm", b"{}"), queue="idle")

            async def enqueue() -> None:
                await client.enqueue(Task("idle", b'{"n": 1}'), queue="idle")

            starts: list[float] = []

            async def enqueue_marked() -> None:
                starts.append(time.perf_counter())
                await enqueue()

            async def dequeue() -> None:
                got = await broker.dequeue("idle", 1, time.time() + 60)
                assert isinstance(got, list) and len(got) == 1

            for gap_name, gap in (("back to back", 0.0), (f"after {args.gap * 1000:.0f} ms idle", args.gap)):
                rows[f"raw PING, {gap_name}"] = _summary(await _timed(args.n, gap, ping))
                handed.clear()
                starts.clear()
                totals = await _timed(args.n, gap, enqueue_marked)
                before = [h - s for h, s in zip(handed[-args.n :], starts, strict=True)]
                rows[f"enqueue, {gap_name}"] = _summary(totals)
                rows[f"enqueue until its batch is sent, {gap_name}"] = _summary(before)
                rows[f"dequeue of one task, {gap_name}"] = _summary(await _timed(args.n, gap, dequeue))
            await session.aclose()
        writer.close()
    finally:
        transport_module.send_batch = send
        redis.stop()
    return rows


def run() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--gap", type=float, default=0.02)
    args = p.parse_args()
    rows = uvloop.run(main(args))
    width = max(len(k) for k in rows)
    print(f"{'':{width}}  {'p50 ms':>8} {'p90 ms':>8}")
    for name, row in rows.items():
        print(f"{name:{width}}  {row['p50_ms']:8.3f} {row['p90_ms']:8.3f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"idle-cost-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"n": args.n, "gap": args.gap, "rows": rows}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    run()
