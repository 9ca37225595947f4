"""Fleet-wide flow control, measured: does a rate limit hold over a minute across 4 worker processes,
is a concurrency cap ever exceeded, and do unlimited queues on the same workers keep their pace?

Four worker processes (concurrency 20 each) serve three queues on one local Redis:

- ``fc-rated``: a RateLimit of ``--rate`` starts per second, no-op handler, kept full;
- ``fc-capped``: a ConcurrencyLimit of ``--cap``, handler sleeps 50 ms, kept full;
- ``fc-free``: no limit, no-op handler, kept full.

Phase 1 runs the free queue alone (the baseline), phase 2 all three; each lasts ``--duration``
seconds. The rate is read from the handlers' per-second start counters in Redis; the cap is sampled
every 20 ms from the capped queue's lease set (the tasks leased = running) and from a running-handler
counter the handlers keep; the free queue's pace is its processed counter per second.

    python -m benchmarks.flow_control [--duration 60] [--rate 50] [--cap 5]

Figures are printed and written to benchmarks/results/flow-control-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
RATED, CAPPED, FREE = "fc-rated", "fc-capped", "fc-free"
WORKERS = 4


def _started_key(queue: str, second: int) -> str:
    return f"bench:{{{queue}}}:started:{second}"


def _running_key(queue: str) -> str:
    return f"bench:{{{queue}}}:running"


def _most_key(queue: str) -> str:
    return f"bench:{{{queue}}}:most"


# -- a worker process ------------------------------------------------------------------------------


async def _work(port: int, limited: bool, rate: int, cap: int) -> None:
    from redis.asyncio import Redis

    from asynq_aio import ConcurrencyLimit, Config, RateLimit, RedisClientOpt, ServeMux, Server, Task

    marks = Redis(port=port)
    mux = ServeMux()

    async def rated(task: Task) -> None:
        await marks.incr(_started_key(RATED, int(time.time())))

    async def capped(task: Task) -> None:
        # running count and its maximum, both in Redis so the 4 processes share them
        now = await marks.incr(_running_key(CAPPED))
        await marks.eval(
            "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then "
            "redis.call('SET', KEYS[1], ARGV[1]) end",
            1,
            _most_key(CAPPED),
            now,
        )
        await anyio.sleep(0.05)
        await marks.decr(_running_key(CAPPED))

    async def free(task: Task) -> None:
        return None

    mux.handle_func("rated", rated)
    mux.handle_func("capped", capped)
    mux.handle_func("free", free)
    queues = {FREE: 1, RATED: 1, CAPPED: 1} if limited else {FREE: 1}
    limits: list[Any] = [RateLimit(queue=RATED, rate=rate), ConcurrencyLimit(queue=CAPPED, limit=cap)]
    config = Config(concurrency=20, queues=queues, limits=limits if limited else [], shutdown_timeout=1.0)
    await Server(RedisClientOpt(addr=f"127.0.0.1:{port}"), config).run(mux)


# -- the run ---------------------------------------------------------------------------------------


async def _fill(port: int, queue: str, task_type: str, keep: int) -> None:
    """Keep ``queue`` at least ``keep`` pending tasks deep."""
    from redis.asyncio import Redis

    from asynq_aio import Client, RedisClientOpt, Task
    from asynq_aio.protocol.keys import queue_keys

    raw = Redis(port=port)
    async with Client(RedisClientOpt(addr=f"127.0.0.1:{port}")) as client:
        while True:
            if int(await raw.llen(queue_keys(queue).pending)) < keep:
                await client.enqueue_many([Task(task_type, b"{}") for _ in range(keep)], queue=queue)
            await anyio.sleep(0.2)


def _spawn_workers(port: int, limited: bool, args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    flags = ["--port", str(port), "--rate", str(args.rate), "--cap", str(args.cap)]
    cmd = [sys.executable, "-P", "-m", "benchmarks.flow_control", "--role", "worker", *flags]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [
        subprocess.Popen([*cmd, *(["--limited"] if limited else [])], cwd=ROOT, env=env)
        for _ in range(WORKERS)
    ]


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    cmd = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL)


async def _phase(port: int, limited: bool, args: argparse.Namespace) -> dict[str, Any]:
    from redis.asyncio import Redis

    from asynq_aio.protocol.keys import queue_keys

    raw = Redis(port=port)
    await raw.flushall()
    procs = _spawn_workers(port, limited, args)
    samples: list[int] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_fill, port, FREE, "free", 5000)
            if limited:
                tg.start_soon(_fill, port, RATED, "rated", 2000)
                tg.start_soon(_fill, port, CAPPED, "capped", 500)
            await anyio.sleep(5.0)  # warm-up: workers start, queues fill
            free_before = int(await raw.get(queue_keys(FREE).processed) or 0)
            t0 = time.time()
            end = t0 + args.duration
            while time.time() < end:
                if limited:
                    samples.append(int(await raw.zcard(queue_keys(CAPPED).lease)))
                await anyio.sleep(0.02)
            free_after = int(await raw.get(queue_keys(FREE).processed) or 0)
            t1 = time.time()
            tg.cancel_scope.cancel()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
    out: dict[str, Any] = {"free_per_s": (free_after - free_before) / (t1 - t0)}
    if limited:
        seconds = range(int(t0) + 1, int(t1))  # whole seconds inside the window
        counts = [int(await raw.get(_started_key(RATED, s)) or 0) for s in seconds]
        out |= {
            "rated_total": sum(counts),
            "rated_seconds": len(counts),
            "rated_per_s": sum(counts) / len(counts),
            "rated_max_second": max(counts),
            "rated_min_second": min(counts),
            "cap_leased_max_sampled": max(samples),
            "cap_samples": len(samples),
            "cap_running_max": int(await raw.get(_most_key(CAPPED)) or 0),
        }
    await raw.aclose()
    return out


async def _main(args: argparse.Namespace) -> None:
    port = args.port
    server = None
    if port == 0:
        port = 23871
        server = _start_redis(port)
        await anyio.sleep(0.5)
    try:
        base = await _phase(port, False, args)
        print(f"phase 1 (free queue alone): {base['free_per_s']:,.0f} tasks/s")
        lim = await _phase(port, True, args)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    print(
        f"phase 2 (with the limited queues): free {lim['free_per_s']:,.0f} tasks/s "
        f"({lim['free_per_s'] / base['free_per_s']:.2f}x phase 1)"
    )
    print(
        f"  rate limit {args.rate}/s over {lim['rated_seconds']} whole seconds: "
        f"{lim['rated_total']} starts = "
        f"{lim['rated_per_s']:.2f}/s ({lim['rated_per_s'] / args.rate - 1:+.1%}); "
        f"busiest second {lim['rated_max_second']}, quietest {lim['rated_min_second']}"
    )
    print(
        f"  concurrency cap {args.cap}: most leased at once {lim['cap_leased_max_sampled']} "
        f"({lim['cap_samples']} samples), most handlers running at once {lim['cap_running_max']}"
    )
    result = {"args": vars(args), "workers": WORKERS, "phase1": base, "phase2": lim}
    out = ROOT / "benchmarks" / "results" / f"flow-control-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--rate", type=int, default=50)
    p.add_argument("--cap", type=int, default=5)
    p.add_argument("--port", type=int, default=0, help="a running local Redis (default: start one)")
    p.add_argument("--role", default="run", choices=["run", "worker"])
    p.add_argument("--limited", action="store_true")
    args = p.parse_args()
    if args.role == "worker":
        import uvloop

        uvloop.run(_work(args.port, args.limited, args.rate, args.cap))
    else:
        anyio.run(_main, args)


if __name__ == "__main__":
    main()
