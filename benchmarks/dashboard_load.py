"""What the web dashboard costs on Redis with a deep queue (1,000,000 pending tasks in one queue) and
with many queues (1,000 queues of one task each).

A private redis-server (no persistence) gets N pending tasks in one queue (``Client.enqueue_many``,
a 100-byte JSON payload each) plus a few small queues. The dashboard app is driven in-process
(httpx's ASGI transport, so no HTTP server is timed) and each page is loaded R times; for each the
script reports the median and worst response time, and per load the Redis commands it ran and the
Redis CPU time they took (from INFO commandstats / INFO cpu deltas). A second phase adds Q
one-task queues and loads the overview and the live JSON again (R / 4 times, at least 3).

    python -m benchmarks.dashboard_load   # 1,000,000 tasks, 20 loads per page, then 1,000 queues
    python -m benchmarks.dashboard_load --tasks 20000 --queues 100  # a quick run

The figures go to stdout and to benchmarks/results/dashboard-load.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis

from asynq_aio import Client, Inspector, Task, parse_redis_url
from asynq_aio.web import create_app
from benchmarks.procs import SingleRedis

RESULTS = Path(__file__).with_name("results")
QUEUE = "big"
BATCH = 2000


async def fill(client: Client, n: int) -> float:
    """Enqueue n pending tasks into QUEUE, a few batches at once; returns the seconds it took."""
    start = time.perf_counter()
    payload = {"user": 123456, "action": "resize", "url": "https://example.com/img/abcdef.jpg", "w": 640}
    sem = asyncio.Semaphore(4)

    async def batch(size: int) -> None:
        async with sem:
            out = await client.enqueue_many([Task("img:resize", payload) for _ in range(size)], queue=QUEUE)
            bad = [x for x in out if isinstance(x, Exception)]
            if bad:
                raise bad[0]

    await asyncio.gather(*(batch(min(BATCH, n - i)) for i in range(0, n, BATCH)))
    return time.perf_counter() - start


def redis_counters(r: redis.Redis) -> tuple[int, float]:
    """Total commands processed and Redis CPU seconds (user + sys) so far."""
    stats = r.info("commandstats")
    calls = sum(int(v["calls"]) for v in stats.values())
    cpu = r.info("cpu")
    return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def measure(http: httpx.AsyncClient, r: redis.Redis, path: str, repeat: int) -> dict[str, float]:
    times, calls, cpus = [], [], []
    for _ in range(repeat):
        c0, cpu0 = redis_counters(r)
        t0 = time.perf_counter()
        resp = await http.get(path)
        times.append(time.perf_counter() - t0)
        c1, cpu1 = redis_counters(r)
        resp.raise_for_status()
        calls.append(c1 - c0 - 2)  # minus the two INFO calls of redis_counters itself
        cpus.append(cpu1 - cpu0)
    return {
        "median_ms": statistics.median(times) * 1000,
        "max_ms": max(times) * 1000,
        "commands": statistics.median(calls),
        "redis_cpu_ms": statistics.median(cpus) * 1000,
    }


def row(label: str, m: dict[str, float]) -> str:
    return (
        f"{label:<48}{m['median_ms']:>8.1f}ms{m['max_ms']:>8.1f}ms"
        f"{m['commands']:>10.0f}{m['redis_cpu_ms']:>9.1f}ms"
    )


async def main(tasks: int, repeat: int, queues: int) -> str:
    server = SingleRedis()
    try:
        opt = parse_redis_url(server.url)
        r = redis.Redis(port=server.port)
        async with Client(opt) as client, Inspector(opt) as insp:
            fill_s = await fill(client, tasks)
            for i in range(5):
                await client.enqueue(Task("small", {"i": i}), queue=f"small{i}")
            info = await insp.get_queue_info(QUEUE)
            assert info.pending == tasks, info
            app = create_app(insp)
            size = 20
            last = (tasks + size - 1) // size
            pages = {
                "overview  /": "/",
                "queue     /queue?q=big (page 1)": f"/queue?q={QUEUE}",
                f"queue     /queue?q=big&page={last // 2} (middle)": f"/queue?q={QUEUE}&page={last // 2}",
                f"queue     /queue?q=big&page={last} (last)": f"/queue?q={QUEUE}&page={last}",
                "task      /task (one pending task)": f"/task?q={QUEUE}&id=__ID__",
                "live JSON /api/stats (every refresh)": "/api/stats",
            }
            first = (await insp.list_pending_tasks(QUEUE, size=1))[0].id
            transport = httpx.ASGITransport(app=app)
            lines = [
                f"dashboard load, {datetime.now(tz=UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
                f"Python {platform.python_version()}, redis-server {r.info('server')['redis_version']}",
                f"{tasks:,} pending tasks in queue {QUEUE!r} (+5 one-task queues), filled in {fill_s:.1f} s; "
                f"Redis used_memory {int(r.info('memory')['used_memory']) / 2**20:.0f} MiB",
                f"each page loaded {repeat} times in-process (httpx ASGI transport, single local Redis)",
                "",
                f"{'page':<48}{'median':>10}{'worst':>10}{'commands':>10}{'Redis CPU':>11}",
            ]
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                for label, path in pages.items():
                    m = await measure(http, r, path.replace("__ID__", first), repeat)
                    lines.append(row(label, m))
                for i in range(queues):
                    await client.enqueue(Task("small", {"i": i}), queue=f"many{i:04d}")
                lines += ["", f"then with {queues:,} more one-task queues ({queues + 6:,} queues in all):"]
                for label, path in (
                    ("overview  /", "/"),
                    ("live JSON /api/stats (every refresh)", "/api/stats"),
                ):
                    lines.append(row(label, await measure(http, r, path, max(3, repeat // 4))))
        r.close()
    finally:
        server.stop()
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--queues", type=int, default=1000, help="one-task queues added for the second phase")
    ap.add_argument("--no-save", action="store_true", help="print only, do not write the results file")
    args = ap.parse_args()
    report = asyncio.run(main(args.tasks, args.repeat, args.queues))
    print(report)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "dashboard-load.txt").write_text(report + "\n", "utf-8")
