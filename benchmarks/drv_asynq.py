"""asynq-aio driver: ``python -m benchmarks.drv_asynq {produce,work,trickle} --url ...`` (see common.py)."""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import UTC, datetime

import anyio
from pydantic import BaseModel

from asynq_aio import Client, Config, RedisClientOpt, RedisClusterClientOpt, ServeMux, Server, Task
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


class Payload(BaseModel):
    i: int
    ts: float
    name: str
    tags: list[str]
    pad: str


async def connect_first(client: Client) -> None:
    """Open the connection before the clock starts; a --baseline tree from before Client.ping
    connects with a harmless read instead."""
    ping = getattr(client, "ping", None)
    if ping is not None:
        await ping()
    else:
        await client._broker.transport.call("PING")


def conn(url: str) -> RedisClientOpt | RedisClusterClientOpt:
    if url.startswith("cluster://"):
        return RedisClusterClientOpt(addrs=url.removeprefix("cluster://").split(","))
    hostport = url.removeprefix("redis://").split("/")[0]
    return RedisClientOpt(addr=hostport)


async def produce(args: argparse.Namespace) -> None:
    qs = queues(args)
    async with Client(conn(args.url)) as client:
        await connect_first(client)
        process_at = None
        if args.process_in:
            process_at = datetime.fromtimestamp(math.ceil(time.time() + args.process_in), tz=UTC)
            # Asynq stores process_at as whole unix seconds; use whole seconds so T is exact.
            base = math.ceil(time.time() + args.process_in)
        if args.mode == "one":

            async def one(i: int) -> None:
                q = qs[i % len(qs)]
                if args.process_in:
                    t = base + i % max(1, int(args.n / 5))  # about 5 tasks per due second
                    at = datetime.fromtimestamp(t, tz=UTC)
                    await client.enqueue(Task("noop", payload(i, float(t))), queue=q, process_at=at)
                else:
                    await client.enqueue(Task("noop", payload(i)), queue=q)

            elapsed = await produce_concurrently(args.n, args.conc, one)
        else:
            t0 = time.perf_counter()
            for start in range(0, args.n, args.batch):
                idx = range(start, min(args.n, start + args.batch))
                for q_i, q in enumerate(qs):
                    batch = [Task("noop", payload(i)) for i in idx if i % len(qs) == q_i]
                    if batch:
                        res = await client.enqueue_many(batch, queue=q, process_at=process_at)
                        bad = [r for r in res if isinstance(r, Exception)]
                        if bad:
                            raise bad[0]
            elapsed = time.perf_counter() - t0
    emit("RESULT", {"n": args.n, "elapsed": elapsed, "rate": args.n / elapsed})


async def do_trickle(args: argparse.Namespace) -> None:
    q = queues(args)[0]
    async with Client(conn(args.url)) as client:
        await connect_first(client)

        async def one(i: int, ts: float) -> None:
            await client.enqueue(Task("noop", payload(i, ts)), queue=q)

        await trickle(args.n, args.gap, one)
    emit("RESULT", {"n": args.n})


async def work(args: argparse.Namespace) -> None:
    tally = Tally(args.expect, hold=args.handler == "hold")
    mux = ServeMux()
    mode = args.handler

    if mode == "pydantic":

        @mux.task("noop")
        async def typed(p: Payload) -> None:
            tally.started()
            tally.finished()

    else:

        async def handle(task: Task) -> None:
            now = time.time()
            if mode == "latency":
                tally.started(json.loads(task.payload)["ts"], now)
            else:
                tally.started(now=now)
            if mode == "sleep":
                await anyio.sleep(args.sleep)
            elif mode == "hold":
                await anyio.sleep(3600)
            tally.finished()

        mux.handle_func("noop", handle)

    cfg: dict[str, object] = {
        "concurrency": args.conc,
        "queues": {q: 1 for q in queues(args)},
        "shutdown_timeout": 0.0 if mode == "hold" else 8.0,
    }
    if args.dequeue_batch:
        cfg["dequeue_batch"] = args.dequeue_batch
    server = Server(conn(args.url), Config(**cfg))  # type: ignore[arg-type]
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled", interval=0.0005)
    async with server.serve(mux):
        emit("READY")
        if profiler is not None:
            profiler.start()
        await wait_done_or_signal(tally)
        if profiler is not None:
            profiler.stop()
            text = profiler.output_text(unicode=False, color=False, show_all=False)
            await anyio.Path(args.profile).write_text(text)
        res = tally.result()
        if mode == "hold":
            emit("RESULT", res)  # measured with every task in flight; the runner kills us next
    emit("RESULT", res)


def main() -> None:
    args = parse_args()
    fn = {"produce": produce, "work": work, "trickle": do_trickle}[args.role]
    run_main(lambda: fn(args), args.loop)


if __name__ == "__main__":
    main()
