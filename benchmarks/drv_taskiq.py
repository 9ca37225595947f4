"""taskiq + taskiq-redis driver (RedisStreamBroker: consumer groups with acks, taskiq-redis's reliable
broker): ``python -m benchmarks.drv_taskiq {produce,work,trickle} --url ...`` (see common.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from taskiq.api import run_receiver_task
from taskiq_redis import RedisStreamBroker

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


def make_broker(args: argparse.Namespace) -> RedisStreamBroker:
    return RedisStreamBroker(args.url, queue_name=queues(args)[0])


def register(broker: RedisStreamBroker) -> Any:
    @broker.task(task_name="noop")
    async def noop(p: dict[str, Any]) -> None:
        now = time.time()
        tally: Tally = MODE["tally"]
        tally.started(p["ts"] if MODE["handler"] == "latency" else 0.0, now)
        if MODE["handler"] == "sleep":
            await asyncio.sleep(MODE["sleep"])
        tally.finished()

    return noop


async def produce(args: argparse.Namespace) -> None:
    broker = make_broker(args)
    noop = register(broker)
    await broker.startup()  # creates the consumer group, so tasks sent now are delivered later

    async def one(i: int) -> None:
        await noop.kiq(payload(i))

    elapsed = await produce_concurrently(args.n, args.conc, one)
    await broker.shutdown()
    emit("RESULT", {"n": args.n, "elapsed": elapsed, "rate": args.n / elapsed})


async def do_trickle(args: argparse.Namespace) -> None:
    broker = make_broker(args)
    noop = register(broker)
    await broker.startup()

    async def one(i: int, ts: float) -> None:
        await noop.kiq(payload(i, ts))

    await trickle(args.n, args.gap, one)
    await broker.shutdown()
    emit("RESULT", {"n": args.n})


async def work(args: argparse.Namespace) -> None:
    tally = Tally(args.expect)
    MODE.update(tally=tally, handler=args.handler, sleep=args.sleep)
    broker = make_broker(args)
    register(broker)
    await broker.startup()
    runner = asyncio.ensure_future(run_receiver_task(broker, max_async_tasks=args.conc))
    await asyncio.sleep(0.2)
    emit("READY")
    await wait_done_or_signal(tally)
    emit("RESULT", tally.result())  # before clean-up, whose errors do not matter here
    runner.cancel()
    with contextlib.suppress(BaseException):
        await runner
    with contextlib.suppress(Exception):
        await broker.shutdown()


def main() -> None:
    args = parse_args()
    fn = {"produce": produce, "work": work, "trickle": do_trickle}[args.role]
    run_main(lambda: fn(args), args.loop)


if __name__ == "__main__":
    main()
