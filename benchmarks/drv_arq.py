"""arq driver: ``python -m benchmarks.drv_arq {produce,work,trickle} --url ...`` (see common.py).

Runs in its own virtualenv (``benchmarks/.venv-arq``): arq pins redis-py < 6.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker, func

from benchmarks.common import (
    Tally,
    emit,
    parse_args,
    payload,
    produce_concurrently,
    queues,
    run_main,
    trickle,
    wait_done_or_signal,
)


def settings(url: str) -> RedisSettings:
    return RedisSettings.from_dsn(url)


async def produce(args: argparse.Namespace) -> None:
    pool = await create_pool(settings(args.url), default_queue_name=queues(args)[0])

    async def one(i: int) -> None:
        await pool.enqueue_job("noop", payload(i))

    elapsed = await produce_concurrently(args.n, args.conc, one)
    await pool.aclose()
    emit("RESULT", {"n": args.n, "elapsed": elapsed, "rate": args.n / elapsed})


async def do_trickle(args: argparse.Namespace) -> None:
    pool = await create_pool(settings(args.url), default_queue_name=queues(args)[0])

    async def one(i: int, ts: float) -> None:
        await pool.enqueue_job("noop", payload(i, ts))

    await trickle(args.n, args.gap, one)
    await pool.aclose()
    emit("RESULT", {"n": args.n})


async def work(args: argparse.Namespace) -> None:
    tally = Tally(args.expect)
    mode = args.handler

    async def noop(ctx: dict[str, Any], p: dict[str, Any]) -> None:
        now = time.time()
        tally.started(p["ts"] if mode == "latency" else 0.0, now)
        if mode == "sleep":
            await asyncio.sleep(args.sleep)
        tally.finished()

    worker = Worker(
        functions=[func(noop, name="noop")],
        queue_name=queues(args)[0],
        redis_settings=settings(args.url),
        max_jobs=args.conc,
        handle_signals=False,
    )
    runner = asyncio.ensure_future(worker.main())
    await asyncio.sleep(0.2)
    emit("READY")
    await wait_done_or_signal(tally)
    emit("RESULT", tally.result())  # before clean-up, whose errors do not matter here
    runner.cancel()
    with contextlib.suppress(BaseException):
        await runner
    with contextlib.suppress(Exception):
        await worker.close()


def main() -> None:
    args = parse_args()
    fn = {"produce": produce, "work": work, "trickle": do_trickle}[args.role]
    run_main(lambda: fn(args), args.loop)


if __name__ == "__main__":
    main()
