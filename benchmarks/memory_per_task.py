"""Redis memory per task in each state, measured: how much Redis a workload needs.

On a private Redis, N tasks with a payload of P bytes are enqueued (pending), then dequeued and
acked with a retention (completed), or failed for good (archived); ``used_memory`` is read before
and after each step. The figure includes everything a task costs: its hash, its entry in the
state's list or zset, and the allocator's overhead.

    python -m benchmarks.memory_per_task --n 50000 --payload 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

from asynq_aio import Client, Task, parse_redis_url
from asynq_aio.protocol.broker import Broker
from asynq_aio.protocol.codec import decode_task_message
from benchmarks.procs import SingleRedis

RESULTS = Path(__file__).with_name("results")


def used(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


async def measure(n: int, payload: int) -> dict[str, float]:
    server = SingleRedis()
    r = redis.Redis(port=server.port)
    out: dict[str, float] = {}
    try:
        async with Client(parse_redis_url(server.url)) as client:
            broker: Broker = client._broker
            for state in ("pending", "completed", "archived"):
                queue = f"mem_{state}"
                base = used(r)
                tasks = [Task("t", (b"x" * payload)[:payload]) for _ in range(n)]
                for i in range(0, n, 1000):
                    await client.enqueue_many(tasks[i : i + 1000], queue=queue, retention=3600)
                if state != "pending":
                    left = n
                    while left:
                        got = await broker.dequeue(queue, min(500, left), time.time() + 600)
                        assert isinstance(got, list) and got
                        left -= len(got)
                        msgs = [decode_task_message(d.raw) for d in got]
                        if state == "completed":
                            ops = [broker.ack_many_op(queue, msgs, attempts=[d.attempt for d in got])]
                        else:
                            ops = [
                                broker.fail_op(m, error="boom", archive=True, attempt=d.attempt)
                                for m, d in zip(msgs, got, strict=True)
                            ]
                        await broker.run(ops)
                out[state] = round((used(r) - base) / n, 1)
    finally:
        r.close()
        server.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--payload", type=int, default=100, help="payload bytes per task")
    args = p.parse_args()
    per_task = asyncio.run(measure(args.n, args.payload))
    result = {
        "when": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "n": args.n,
        "payload_bytes": args.payload,
        "bytes_per_task": per_task,
    }
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"memory-per-task-{datetime.now(tz=UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
