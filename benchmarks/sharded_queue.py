"""One hot queue, unsharded against sharded over a 3-master cluster: drain rate and load per master.

A private 3-master cluster (benchmarks/procs.py ClusterRedis, no replicas). Each round fills one
queue with ``--n`` no-op tasks (100-byte payload, enqueue_many) and drains it with one worker
process (concurrency ``--concurrency``), once as an ordinary queue and once as a
``ShardedQueue(name, 3)`` served with ``Config(shards=...)``; the two alternate in order from round
to round. Measured per run:

- tasks/s from the first handler start to the last, in the worker process;
- ``INFO commandstats`` of every master read before the worker starts and after it stops (the
  enqueue is not counted): the calls each master served for the drain, worker start-up and
  heartbeats included, the INFO calls themselves left out. Commands that scripts run count too
  (commandstats counts them, and they are most of the work). An unsharded queue's calls land on
  the one master that owns its slot; a sharded queue's are spread over the three.

    python -m benchmarks.sharded_queue [--n 20000] [--rounds 3] [--concurrency 100]

Medians are printed and written, with every run, to benchmarks/results/sharded-queue-<time>.json.
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

import anyio

ROOT = Path(__file__).resolve().parent.parent
SHARDS = 3
VARIANTS = ("unsharded", "sharded")

DRAIN = """
import json, sys, time, anyio
from asynq_aio import Config, RedisClusterClientOpt, Server
addrs, queue = sys.argv[1].split(","), sys.argv[2]
n, conc, shards = (int(a) for a in sys.argv[3:6])
async def main():
    opt = RedisClusterClientOpt(addrs=addrs)
    done = anyio.Event(); seen = 0; t = {}
    async def h(task):
        nonlocal seen
        if seen == 0:
            t["first"], t["c0"] = time.perf_counter(), time.process_time()
        seen += 1
        if seen >= n:
            t["last"], t["c1"] = time.perf_counter(), time.process_time(); done.set()
    cfg = Config(queues={queue: 1}, shards={queue: shards} if shards else {}, concurrency=conc,
                 shutdown_timeout=1.0)
    async with Server(opt, cfg).serve(h):
        await done.wait()
    print(json.dumps({"tasks_per_s": n / (t["last"] - t["first"]),
                      "cpu_us_per_task": 1e6 * (t["c1"] - t["c0"]) / n}))
anyio.run(main, backend_options={"use_uvloop": True})
"""


def command_calls(client: Any) -> dict[str, int]:
    """``INFO commandstats`` of one node: calls per command (the INFO calls left out)."""
    stats = client.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): int(v["calls"])
        for k, v in stats.items()
        if k.startswith("cmdstat_") and k != "cmdstat_info"
    }


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


async def fill(addrs: list[str], queue: str, n: int, sharded: bool) -> list[str]:
    """Enqueue ``n`` tasks; returns the concrete queues written (one, or the three shards)."""
    from asynq_aio import Client, RedisClusterClientOpt, ShardedQueue, Task

    target: str | ShardedQueue = ShardedQueue(queue, SHARDS) if sharded else queue
    async with Client(RedisClusterClientOpt(addrs=addrs)) as client:
        for first in range(0, n, 1000):
            infos = await client.enqueue_many(
                [Task("noop", b"x" * 100) for _ in range(first, min(n, first + 1000))], queue=target
            )
            if any(isinstance(i, Exception) for i in infos):
                raise RuntimeError(f"enqueue failed: {next(i for i in infos if isinstance(i, Exception))}")
    return list(target.names) if isinstance(target, ShardedQueue) else [queue]


def run_once(cluster: Any, variant: str, n: int, concurrency: int) -> dict[str, Any]:
    sharded = variant == "sharded"
    # one name every run (the cluster is flushed between runs), so the unsharded queue is on the same
    # master each round and the per-master medians compare like with like
    queue = "hot"
    cluster.flush()
    names = anyio.run(fill, cluster.cluster.addrs, queue, n, sharded)
    homes = {name: cluster.master_of(f"asynq:{{{name}}}:pending") for name in names}
    before = {p: command_calls(c) for p, c in zip(cluster.cluster.ports, cluster.clients, strict=True)}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [",".join(cluster.cluster.addrs), queue, str(n), str(concurrency), str(SHARDS if sharded else 0)]
    out = subprocess.run(
        [sys.executable, "-P", "-c", DRAIN, *args], env=env, capture_output=True, text=True, check=True
    )
    after = {p: command_calls(c) for p, c in zip(cluster.cluster.ports, cluster.clients, strict=True)}
    per_master = {str(p): delta(before[p], after[p]) for p in cluster.cluster.ports}
    return {
        "variant": variant,
        "queues": homes,
        **json.loads(out.stdout.strip().splitlines()[-1]),
        "calls_per_master": {p: sum(d.values()) for p, d in per_master.items()},
        "commands_per_master": per_master,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="tasks per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=100)
    args = ap.parse_args(argv)

    from benchmarks.procs import ClusterRedis

    print(f"load average at start: {os.getloadavg()}")
    cluster = ClusterRedis()
    runs: list[dict[str, Any]] = []
    try:
        ports = [str(p) for p in cluster.cluster.ports]
        for r in range(args.rounds):
            order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                row = run_once(cluster, variant, args.n, args.concurrency)
                runs.append(row)
                calls = " ".join(f"{p}:{row['calls_per_master'][p]}" for p in ports)
                print(
                    f"round {r + 1} {variant:9} {row['tasks_per_s']:9,.0f} tasks/s "
                    f"{row['cpu_us_per_task']:6.0f} us CPU/task  calls per master {calls}  "
                    f"queues on {sorted(set(row['queues'].values()))}",
                    flush=True,
                )
    finally:
        cluster.stop()
    print(f"load average at end: {os.getloadavg()}")
    median: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        rows = [r for r in runs if r["variant"] == variant]
        median[variant] = {
            "tasks_per_s": statistics.median(r["tasks_per_s"] for r in rows),
            "cpu_us_per_task": statistics.median(r["cpu_us_per_task"] for r in rows),
            **{f"calls@{p}": statistics.median(r["calls_per_master"][p] for r in rows) for p in ports},
        }
    head = f"median of {args.rounds} rounds, {args.n:,} tasks, one worker process"
    print(f"\n{head}, concurrency {args.concurrency}")
    print(
        "| variant | tasks/s | worker CPU us/task | "
        + " | ".join(f"calls on master :{p}" for p in ports)
        + " |"
    )
    print("|---|---:|---:|" + "---:|" * len(ports))
    for variant, m in median.items():
        calls = " | ".join(f"{m[f'calls@{p}']:,.0f}" for p in ports)
        print(f"| {variant} | {m['tasks_per_s']:,.0f} | {m['cpu_us_per_task']:,.0f} | {calls} |")
    out = ROOT / "benchmarks" / "results" / f"sharded-queue-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps({"args": vars(args), "median": median, "runs": runs, "load": os.getloadavg()}, indent=1)
    )
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
