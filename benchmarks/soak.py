"""Soak: does Redis memory stay bounded under sustained load? (issue: cleanup that keeps up)

One worker process runs no-op tasks at full speed while this process keeps its queue fed; every task
has a short retention and a share of them fail (retried once, then archived). Every few seconds the
run samples Redis ``used_memory``, the sizes of pending, completed, retry, archived and lease, the
number of keys, and the worker's RSS. Before the load starts, an optional backlog of already
expired completed tasks (what a crashed fleet, or a Go fleet with a small cleanup batch, leaves
behind) is written, so the run also shows how fast the first server works it off. The longest
single command Redis ran (a cleanup script is the candidate) comes from its SLOWLOG.

    python -m benchmarks.soak --duration 180 --retention 1 --fail-every 10 --backlog 200000

Figures are printed and written to benchmarks/results/soak-<time>.json; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from asynq_aio import Client, Config, ServeMux, Server, Task, parse_redis_url
from asynq_aio.protocol import scripts
from asynq_aio.protocol._redis.ops import LuaScript
from asynq_aio.protocol.keys import queue_keys
from benchmarks.common import rss_bytes
from benchmarks.procs import SingleRedis

QUEUE = "soak"
SCRIPT_NAMES = {s.sha: s.name for s in vars(scripts).values() if isinstance(s, LuaScript)}
RESULTS = Path(__file__).with_name("results")
STEADY_FIELDS = (
    "used_memory",
    "completed",
    "completed_overdue_1s",
    "retry",
    "archived",
    "keys",
    "worker_rss",
)


# -- the worker process ---------------------------------------------------------------------------


def worker_main(args: argparse.Namespace) -> None:
    mux = ServeMux()
    fail_every = args.fail_every

    async def handle(task: Task) -> None:
        if fail_every and int(task.payload) % fail_every == 0:
            raise RuntimeError("planned failure")

    mux.handle_func("soak", handle)
    cfg = Config(
        concurrency=args.concurrency,
        queues={QUEUE: 1},
        retry_delay_func=lambda n, e, t: 1.0,
        forward_interval=0.2,
    )
    asyncio.run(Server(parse_redis_url(args.url), cfg).run(mux))


# -- the driver -----------------------------------------------------------------------------------


def write_backlog(r: redis.Redis, n: int) -> None:
    """``n`` completed tasks whose retention ran out an hour ago, hashes and zset entries."""
    qk = queue_keys(QUEUE)
    expired = time.time() - 3600
    for start in range(0, n, 5000):
        pipe = r.pipeline(transaction=False)
        ids = [f"backlog-{i}" for i in range(start, min(n, start + 5000))]
        for tid in ids:
            pipe.hset(qk.task(tid), mapping={"msg": b"x" * 120, "state": "completed"})
        pipe.zadd(qk.completed, {tid: expired for tid in ids})
        pipe.execute()


def sample(r: redis.Redis, worker_pid: int, t0: float, processed0: int) -> dict[str, Any]:
    qk = queue_keys(QUEUE)
    pipe = r.pipeline(transaction=False)
    pipe.info("memory")
    pipe.llen(qk.pending)
    pipe.llen(qk.active)
    pipe.zcard(qk.completed)
    pipe.zcard(qk.retry)
    pipe.zcard(qk.archived)
    pipe.zcard(qk.lease)
    pipe.dbsize()
    pipe.get(qk.processed)
    pipe.zcount(qk.completed, "-inf", time.time() - 1)
    mem, pending, active, completed, retry, archived, lease, keys, processed, overdue = pipe.execute()
    return {
        "t": round(time.monotonic() - t0, 1),
        "used_memory": int(mem["used_memory"]),
        "pending": pending,
        "active": active,
        "completed": completed,
        "completed_overdue_1s": overdue,
        "retry": retry,
        "archived": archived,
        "lease": lease,
        "keys": keys,
        "processed": int(processed or 0) - processed0,
        "worker_rss": rss_bytes(worker_pid),
    }


async def feed(url: str, stop: asyncio.Event, retention: float, counter: list[int]) -> None:
    """Keep pending between 5,000 and 20,000 tasks: the worker is never starved, Redis never floods."""
    qk = queue_keys(QUEUE)
    r = redis.asyncio.Redis.from_url(url)
    async with Client(parse_redis_url(url)) as client:
        while not stop.is_set():
            if int(await r.llen(qk.pending)) > 5000:
                await asyncio.sleep(0.02)
                continue
            base = counter[0]
            tasks = [Task("soak", str(base + i).encode()) for i in range(1000)]
            await client.enqueue_many(tasks, queue=QUEUE, retention=retention, max_retry=1)
            counter[0] += len(tasks)
    await r.aclose()


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    server = SingleRedis()
    r = redis.Redis(port=server.port)
    r.config_set("slowlog-log-slower-than", 1000)  # microseconds
    r.config_set("slowlog-max-len", 10000)
    worker: subprocess.Popen[bytes] | None = None
    try:
        if args.backlog:
            write_backlog(r, args.backlog)
        backlog_mem = int(r.info("memory")["used_memory"])
        r.slowlog_reset()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if args.src:  # the worker imports asynq_aio from another tree (e.g. an older commit)
            env["PYTHONPATH"] = args.src
        worker = subprocess.Popen(  # noqa: ASYNC220 - started once, before the load
            [sys.executable, __file__, "worker", "--url", server.url,
             "--concurrency", str(args.concurrency), "--fail-every", str(args.fail_every)],
            env=env,
        )  # fmt: skip
        t0 = time.monotonic()
        backlog_gone_at: float | None = None if args.backlog else 0.0
        samples: list[dict[str, Any]] = []
        stop = asyncio.Event()
        counter = [0]
        feeder = asyncio.create_task(feed(server.url, stop, args.retention, counter))
        processed0 = 0
        next_sample = 0.0
        while (now := time.monotonic() - t0) < args.duration:
            await asyncio.sleep(0.25)
            if (
                backlog_gone_at is None
                and r.zcount(queue_keys(QUEUE).completed, "-inf", time.time() - 3000) == 0
            ):
                backlog_gone_at = round(now, 2)
                print(f"t={now:6.1f}s the backlog of {args.backlog} expired tasks is gone", flush=True)
            if now >= next_sample:
                next_sample = now + args.every
                s = sample(r, worker.pid, t0, processed0)
                samples.append(s)
                print(
                    f"t={s['t']:6.1f}s mem={s['used_memory'] / 2**20:7.1f} MiB pending={s['pending']:6d} "
                    f"completed={s['completed']:7d} (overdue {s['completed_overdue_1s']:6d}) "
                    f"retry={s['retry']:5d} archived={s['archived']:6d} lease={s['lease']:4d} "
                    f"keys={s['keys']:7d} processed={s['processed']:8d} "
                    f"worker_rss={s['worker_rss'] / 2**20:5.1f} MiB",
                    flush=True,
                )
        stop.set()
        await feeder
        slow = r.slowlog_get(10000)
        longest = max(slow, key=lambda e: e["duration"], default=None)
        by_script: dict[str, int] = {}
        for e in slow:
            words = e["command"].split()
            name = (
                SCRIPT_NAMES.get(words[1].decode(), "?") if words[:1] == [b"EVALSHA"] else words[0].decode()
            )
            by_script[name] = max(by_script.get(name, 0), int(e["duration"]))
        steady = [s for s in samples if s["t"] >= args.duration / 3]
        elapsed = samples[-1]["t"] if samples else 0.0
        rate = samples[-1]["processed"] / elapsed if elapsed else 0.0
        return {
            "when": datetime.now(tz=UTC).isoformat(timespec="seconds"),
            "redis": server.version(),
            "args": vars(args),
            "enqueued": counter[0],
            "rate_tasks_per_s": round(rate),
            "backlog": args.backlog,
            "backlog_used_memory": backlog_mem,
            "backlog_gone_after_s": backlog_gone_at,
            "longest_command_us": longest["duration"] if longest else None,
            "longest_command": (longest["command"].decode(errors="replace")[:80] if longest else None),
            "commands_over_1ms": len(slow),
            "longest_us_by_command": dict(sorted(by_script.items(), key=lambda kv: -kv[1])),
            "steady": {
                k: {"min": min(s[k] for s in steady), "max": max(s[k] for s in steady)} for k in STEADY_FIELDS
            }
            if steady
            else {},
            "samples": samples,
        }
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        r.close()
        server.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", nargs="?", default="drive", choices=["drive", "worker"])
    p.add_argument("--url", default="")
    p.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    p.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--retention", type=float, default=1.0, help="seconds each completed task is kept")
    p.add_argument("--fail-every", type=int, default=10, help="every Nth task fails (0 = none)")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--backlog", type=int, default=200_000, help="expired completed tasks written first")
    p.add_argument("--src", default="", help="run the worker on the asynq_aio of this tree (a git worktree)")
    args = p.parse_args(argv)
    if args.role == "worker":
        worker_main(args)
        return
    # the worker imports this file by path; the driver imports it as benchmarks.soak
    result = asyncio.run(drive(args))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak-{datetime.now(tz=UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result.items() if k not in ("samples", "args")}
    print(json.dumps(summary, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
