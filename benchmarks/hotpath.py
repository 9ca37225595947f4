"""The per-task Python cost of the hot paths, this checkout against an older tree, interleaved.

Three measurements, each run in a fresh process from the tree under test (``python -P`` with that
tree first on the path), against one local Redis:

- ``drain``: 20,000 no-op tasks (100-byte payload) enqueued with enqueue_many, then drained by one
  Server (concurrency 100): tasks/s from the first handler start to the last, and the worker
  process's CPU time per task (less sensitive than wall time to a noisy machine);
- ``one_caller``: 5,000 enqueues, one awaited at a time: microseconds per call;
- ``concurrent``: 20,000 enqueues from 64 coroutines: enqueues/s and CPU per enqueue;
- ``many``: 30 ``enqueue_many`` calls of 1,000 tasks each: tasks/s and CPU per task;
- ``new_queue``: 2,000 enqueues, one awaited at a time, each into a queue this client has not used
  yet (so each also lists its queue in ``asynq:queues``): microseconds per call.

    python -m benchmarks.hotpath --baseline REV [--rounds 5]

Rounds alternate the trees; the medians are printed and written, with every round, to
benchmarks/results/hotpath-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

DRAIN = """
import time, anyio
from asynq_aio import Client, Config, RedisClientOpt, Server, Task
N = 20000
async def main():
    opt = RedisClientOpt(addr="127.0.0.1:%(port)d")
    q = f"d{time.time_ns()}"
    async with Client(opt) as c:
        for _ in range(0, N, 1000):
            await c.enqueue_many([Task("noop", b"x" * 100) for _ in range(1000)], queue=q)
    done = anyio.Event(); n = 0; t = {}
    async def h(task):
        nonlocal n
        if n == 0:
            t["first"], t["c0"] = time.perf_counter(), time.process_time()
        n += 1
        if n >= N:
            t["last"], t["c1"] = time.perf_counter(), time.process_time(); done.set()
    async with Server(opt, Config(queues={q: 1}, concurrency=100)).serve(h):
        await done.wait()
    print(N / (t["last"] - t["first"]), 1e6 * (t["c1"] - t["c0"]) / N)
anyio.run(main, backend_options={"use_uvloop": True})
"""

ONE_CALLER = """
import time, uvloop
from asynq_aio import Client, RedisClientOpt, Task
async def main(n=5000):
    async with Client(RedisClientOpt(addr="127.0.0.1:%(port)d")) as c:
        for _ in range(200):
            await c.enqueue(Task("noop", b"x" * 100), queue="hp1")
        t0 = time.perf_counter()
        for _ in range(n):
            await c.enqueue(Task("noop", b"x" * 100), queue="hp1")
        print(1e6 * (time.perf_counter() - t0) / n)
uvloop.run(main())
"""

CONCURRENT = """
import asyncio, time, uvloop
from asynq_aio import Client, RedisClientOpt, Task
N = 20000
async def main():
    async with Client(RedisClientOpt(addr="127.0.0.1:%(port)d")) as c:
        await c.enqueue(Task("noop", b"x" * 100), queue="hpc")
        async def one(n):
            for _ in range(n):
                await c.enqueue(Task("noop", b"x" * 100), queue="hpc")
        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(N // 64) for _ in range(64)))
        print(N / (time.perf_counter() - t0), 1e6 * (time.process_time() - c0) / N)
uvloop.run(main())
"""

MANY = """
import time, uvloop
from asynq_aio import Client, RedisClientOpt, Task
async def main(calls=30):
    async with Client(RedisClientOpt(addr="127.0.0.1:%(port)d")) as c:
        tasks = [Task("noop", b"x" * 100) for _ in range(1000)]
        for _ in range(3):
            await c.enqueue_many(tasks, queue="hpm")
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await c.enqueue_many(tasks, queue="hpm")
        n = calls * len(tasks)
        print(n / (time.perf_counter() - t0), 1e6 * (time.process_time() - c0) / n)
uvloop.run(main())
"""

NEW_QUEUE = """
import time, uuid, uvloop
from asynq_aio import Client, RedisClientOpt, Task
async def main(n=2000):
    async with Client(RedisClientOpt(addr="127.0.0.1:%(port)d")) as c:
        await c.enqueue(Task("noop", b"x" * 100), queue="hpq")
        tag = uuid.uuid4().hex[:8]
        t0 = time.perf_counter()
        for i in range(n):
            await c.enqueue(Task("noop", b"x" * 100), queue=f"hpq{tag}{i}")
        print(1e6 * (time.perf_counter() - t0) / n)
uvloop.run(main())
"""


def tree_of(rev: str, into: Path) -> Path:
    """The package tree of ``rev`` (git archive), so the old code runs as it was."""
    archive = into / f"{rev}.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", rev, "asynq_aio"], cwd=ROOT, stdout=out, check=True)
    dest = into / rev
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _run(tree: Path, code: str, port: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-P", "-c", code % {"port": port}],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return [float(x) for x in out.stdout.split()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="git revision to compare with")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--port", type=int, default=23997)
    args = p.parse_args()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(args.port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    rows: dict[str, dict[str, list[float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trees = {"baseline": tree_of(args.baseline, Path(tmp)), "checkout": ROOT}
            for r in range(args.rounds):
                order = list(trees) if r % 2 == 0 else list(reversed(trees))
                for name in order:
                    got = rows.setdefault(name, {})
                    tps, cpu = _run(trees[name], DRAIN, args.port)
                    got.setdefault("drain tasks/s", []).append(tps)
                    got.setdefault("drain worker CPU us/task", []).append(cpu)
                    got.setdefault("one caller us/enqueue", []).append(
                        _run(trees[name], ONE_CALLER, args.port)[0]
                    )
                    eps, ecpu = _run(trees[name], CONCURRENT, args.port)
                    got.setdefault("64 coroutines enqueues/s", []).append(eps)
                    got.setdefault("64 coroutines CPU us/enqueue", []).append(ecpu)
                    mps, mcpu = _run(trees[name], MANY, args.port)
                    got.setdefault("enqueue_many tasks/s", []).append(mps)
                    got.setdefault("enqueue_many CPU us/task", []).append(mcpu)
                    got.setdefault("new queue us/enqueue", []).append(
                        _run(trees[name], NEW_QUEUE, args.port)[0]
                    )
                subprocess.run(["redis-cli", "-p", str(args.port), "FLUSHALL"], stdout=subprocess.DEVNULL)
    finally:
        redis.terminate()
        redis.wait(10)
    result: dict[str, Any] = {"baseline": args.baseline, "rounds": args.rounds, "all": rows, "median": {}}
    head = f"median of {args.rounds} rounds"
    print(f"{head:32} {'baseline ' + args.baseline:>18} {'checkout':>12} {'ratio':>7}")
    for metric in rows["baseline"]:
        b, c = statistics.median(rows["baseline"][metric]), statistics.median(rows["checkout"][metric])
        result["median"][metric] = {"baseline": b, "checkout": c}
        print(f"{metric:32} {b:18,.1f} {c:12,.1f} {c / b:7.2f}")
    out = ROOT / "benchmarks" / "results" / f"hotpath-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
