"""streaq driver: ``python -m benchmarks.drv_streaq {produce,work,trickle} --url ...`` (see common.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from streaq import Worker

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

MODE: dict[str, Any] = {"tally": None, "handler": "noop", "sleep": 0.01}


def make_worker(args: argparse.Namespace, conc: int = 16) -> tuple[Worker, Any]:
    worker = Worker(redis_url=args.url, queue_name=queues(args)[0], concurrency=conc, handle_signals=False)

    @worker.task
    async def noop(p: dict[str, Any]) -> None:
        now = time.time()
        tally: Tally = MODE["tally"]
        tally.started(p["ts"] if MODE["handler"] == "latency" else 0.0, now)
        if MODE["handler"] == "sleep":
            await asyncio.sleep(MODE["sleep"])
        tally.finished()

    return worker, noop


async def produce(args: argparse.Namespace) -> None:
    worker, noop = make_worker(args)
    async with worker:
        if args.mode == "one":

            async def one(i: int) -> None:
                await noop.enqueue(payload(i))

            elapsed = await produce_concurrently(args.n, args.conc, one)
        else:
            t0 = time.perf_counter()
            for start in range(0, args.n, args.batch):
                await worker.enqueue_many(
                    [noop.enqueue(payload(i)) for i in range(start, min(args.n, start + args.batch))]
                )
            elapsed = time.perf_counter() - t0
    emit("RESULT", {"n": args.n, "elapsed": elapsed, "rate": args.n / elapsed})


async def do_trickle(args: argparse.Namespace) -> None:
    worker, noop = make_worker(args)
    async with worker:

        async def one(i: int, ts: float) -> None:
            await noop.enqueue(payload(i, ts))

        await trickle(args.n, args.gap, one)
    emit("RESULT", {"n": args.n})


async def work(args: argparse.Namespace) -> None:
    tally = Tally(args.expect)
    MODE.update(tally=tally, handler=args.handler, sleep=args.sleep)
    worker, _ = make_worker(args, conc=args.conc)
    runner = asyncio.ensure_future(worker.run_async())
    await asyncio.sleep(0.2)
    emit("READY")
    await wait_done_or_signal(tally)
    emit("RESULT", tally.result())  # before clean-up, whose errors do not matter here
    runner.cancel()
    with contextlib.suppress(BaseException):
        await runner


def main() -> None:
    args = parse_args()
    fn = {"produce": produce, "work": work, "trickle": do_trickle}[args.role]
    run_main(lambda: fn(args), args.loop)


if __name__ == "__main__":
    main()
