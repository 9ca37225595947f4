"""What one enqueue at a time costs, against what the same round trip costs Python at the least.

Three producers, one task at a time (each call awaited before the next), against one private single
Redis, rounds interleaved:

- ``floor``: the least Python can do for an asynq-aio enqueue. The ``enqueue.lua`` calls of ``--n``
  tasks are built and packed *before* the clock starts; timed is only writing each pre-packed
  ``EVALSHA`` on a uvloop protocol and waiting for its reply (hiredis parses it). No options, no
  message, no TaskInfo, no redis-py: the socket write, Redis running the script, the wake-up;
- ``asynq-aio``: ``Client.enqueue(Task(...), queue=...)``, the same task, as an application calls it;
- ``go``: Go Asynq v0.26's ``Client.Enqueue`` from one goroutine (benchmarks/go, built with the local
  Go toolchain; left out, and said so, when there is none).

Each call is timed; the per-call p50 / p99 and the rate are printed per producer (medians over the
rounds for the rate, percentiles over all calls) and written to benchmarks/results/enqueue-floor-<time>.json.

    python -m benchmarks.enqueue_floor [--n 5000] [--rounds 3]

The floor tells what part of a gap to Go is Python's round trip itself, which no change to
asynq-aio's own code can remove, and what part is asynq-aio's work around it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.envs import SYSTEMS, ensure
from benchmarks.procs import SingleRedis, run_once

ROOT = Path(__file__).resolve().parent.parent

FLOOR = """
import asyncio, json, time, uvloop, hiredis
from asynq_aio import Task
from asynq_aio._options import EnqueueOptions, prepare
from asynq_aio.protocol import scripts
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.broker import Broker
from asynq_aio import RedisClientOpt
from benchmarks.common import payload
N = %(n)d
async def main():
    broker = Broker(Transport.connect(RedisClientOpt(addr="127.0.0.1:%(port)d")))
    now = time.time()
    options = EnqueueOptions(queue="%(queue)s")
    reqs = [prepare(Task("noop", payload(i)), options, now=now)[0] for i in range(N)]
    packed = [hiredis.pack_command(broker.enqueue_op(r).wire(by_sha=True)) for r in reqs]
    loop = asyncio.get_running_loop()
    class Proto(asyncio.Protocol):
        def __init__(self):
            self.reader, self.waiter = hiredis.Reader(), None
        def data_received(self, data):
            self.reader.feed(data)
            reply = self.reader.gets()
            if reply is not False:
                self.waiter.set_result(reply)
    transport, proto = await loop.create_connection(Proto, "127.0.0.1", %(port)d)
    proto.waiter = loop.create_future()
    transport.write(hiredis.pack_command(("SCRIPT", "LOAD", scripts.ENQUEUE.source)))
    await proto.waiter
    calls = []
    t0 = time.perf_counter()
    for cmd in packed:
        t = time.perf_counter()
        proto.waiter = loop.create_future()
        transport.write(cmd)
        reply = await proto.waiter
        calls.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    assert reply == [1], reply
    transport.close()
    print(json.dumps({"rate": N / elapsed, "calls": calls}))
uvloop.run(main())
"""

CLIENT = """
import json, time, uvloop
from asynq_aio import Client, RedisClientOpt, Task
from benchmarks.common import payload
N = %(n)d
async def main():
    async with Client(RedisClientOpt(addr="127.0.0.1:%(port)d")) as c:
        await c.enqueue(Task("noop", payload(-1)), queue="%(queue)s")  # connect, register the queue
        calls = []
        t0 = time.perf_counter()
        for i in range(N):
            t = time.perf_counter()
            await c.enqueue(Task("noop", payload(i)), queue="%(queue)s")
            calls.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
    print(json.dumps({"rate": N / elapsed, "calls": calls}))
uvloop.run(main())
"""


def _python(code: str, **values: Any) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-P", "-c", code % values], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _pct(ms: list[float], p: float) -> float:
    s = sorted(ms)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    go_missing = ensure(SYSTEMS["go"])
    if go_missing:
        print(f"Go Asynq not measured: {go_missing}")
    redis = SingleRedis()
    rates: dict[str, list[float]] = {}
    calls_ms: dict[str, list[float]] = {}
    go_p: dict[str, list[float]] = {"p50": [], "p99": []}
    try:
        for rnd in range(args.rounds):
            producers = ["floor", "asynq-aio"] + ([] if go_missing else ["go"])
            for who in producers[rnd % len(producers) :] + producers[: rnd % len(producers)]:
                redis.flush()
                queue = f"floor{rnd}"
                if who == "go":
                    res = run_once(
                        "go",
                        "produce",
                        ["--url", redis.url, "--queue", queue, "--n", str(args.n), "--conc", "1"],
                        f"floor{rnd}",
                        300,
                    )
                    go_p["p50"].append(res["call_p50_ms"])
                    go_p["p99"].append(res["call_p99_ms"])
                else:
                    res = _python(FLOOR if who == "floor" else CLIENT, n=args.n, port=redis.port, queue=queue)
                    calls_ms.setdefault(who, []).extend(1000 * c for c in res["calls"])
                rates.setdefault(who, []).append(res["rate"])
                print(f"  round {rnd} {who:10s} {res['rate']:9,.0f}/s", flush=True)
    finally:
        redis.stop()
    table: dict[str, dict[str, float]] = {}
    for who, rs in rates.items():
        if who == "go":  # the Go driver reports its own percentiles per round: their medians
            p50, p99 = statistics.median(go_p["p50"]), statistics.median(go_p["p99"])
        else:
            p50, p99 = _pct(calls_ms[who], 50), _pct(calls_ms[who], 99)
        table[who] = {"rate": statistics.median(rs), "call_p50_ms": p50, "call_p99_ms": p99}
    print(f"\none caller, one enqueue at a time, {args.n} a round, {args.rounds} rounds, single Redis")
    print(f"{'':12s} {'per s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for who, row in table.items():
        print(f"{who:12s} {row['rate']:9,.0f} {row['call_p50_ms']:8.3f} {row['call_p99_ms']:8.3f}")
    load = os.getloadavg()
    out = ROOT / "benchmarks" / "results" / f"enqueue-floor-{time.strftime('%Y%m%dT%H%M%S')}.json"
    record = {"n": args.n, "rounds": args.rounds, "medians": table, "rates": rates, "loadavg_end": load}
    out.write_text(json.dumps(record, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
