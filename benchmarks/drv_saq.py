"""SAQ driver: ``python -m benchmarks.drv_saq {produce,work,trickle} --url ...`` (see common.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from saq import Queue, Worker

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


async def produce(args: argparse.Namespace) -> None:
    queue = Queue.from_url(args.url, name=queues(args)[0])
    await queue.connect()

    async def one(i: int) -> None:
        await queue.enqueue("noop", p=payload(i))

    elapsed = await produce_concurrently(args.n, args.conc, one)
    await queue.disconnect()
    emit("RESULT", {"n": args.n, "elapsed": elapsed, "rate": args.n / elapsed})


async def do_trickle(args: argparse.Namespace) -> None:
    queue = Queue.from_url(args.url, name=queues(args)[0])
    await queue.connect()

    async def one(i: int, ts: float) -> None:
        await queue.enqueue("noop", p=payload(i, ts))

    await trickle(args.n, args.gap, one)
    await queue.disconnect()
    emit("RESULT", {"n": args.n})


async def work(args: argparse.Namespace) -> None:
    tally = Tally(args.expect)
    mode = args.handler

    async def noop(ctx: dict[str, Any], *, p: dict[str, Any]) -> None:
        now = time.time()
        tally.started(p["ts"] if mode == "latency" else 0.0, now)
        if mode == "sleep":
            await asyncio.sleep(args.sleep)
        tally.finished()

    noop.__qualname__ = "noop"
    queue = Queue.from_url(args.url, name=queues(args)[0])
    await queue.connect()
    worker = Worker(queue, functions=[noop], concurrency=args.conc)
    worker.SIGNALS = []
    runner = asyncio.ensure_future(worker.start())
    await asyncio.sleep(0.2)
    emit("READY")
    await wait_done_or_signal(tally)
    emit("RESULT", tally.result())  # before clean-up, whose errors do not matter here
    await worker.stop()
    runner.cancel()
    with contextlib.suppress(BaseException):
        await runner
    await queue.disconnect()


def main() -> None:
    args = parse_args()
    fn = {"produce": produce, "work": work, "trickle": do_trickle}[args.role]
    run_main(lambda: fn(args), args.loop)


if __name__ == "__main__":
    main()
