"""Pick-up latency against the number of queues one worker serves, and what an idle worker costs Redis.

One worker (concurrency 20) serves 1, 10, 100 and 1,000 queues and is idle; ``--n`` tasks are then
enqueued one at a time ``--gap`` seconds apart, each into a random queue of the set, and the latency
is handler start minus enqueue time (carried in the payload). Before the tasks, the idle worker's
Redis load is read from ``INFO stats`` (commands per second, summed over the masters on a cluster).

    python -m benchmarks.many_queues [--sizes 1,10,100,1000] [--cluster] [--baseline REV]

``--baseline REV`` also runs the worker from the tree of that git revision, interleaved size by
size, so before and after are measured in one run. ``--variant NAME:field=value,...`` (repeatable)
also runs this tree's worker with those ``Config`` fields changed (e.g. ``quiet:forward_interval=60``),
interleaved the same way: what one background component costs pick-up. Figures are printed and written to
benchmarks/results/many-queues-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def queue_names(size: int) -> list[str]:
    return [f"mq{i}" for i in range(size)]


# -- the worker process (run from the tree under test) ---------------------------------------------


async def _work(url: str, size: int, expect: int, overrides: dict[str, Any]) -> None:
    from asynq_aio import Config, RedisClientOpt, RedisClusterClientOpt, Server, Task

    opt: RedisClientOpt | RedisClusterClientOpt
    if url.startswith("cluster://"):
        opt = RedisClusterClientOpt(addrs=url.removeprefix("cluster://").split(","))
    else:
        opt = RedisClientOpt(addr=url.removeprefix("redis://").split("/")[0])
    latencies: list[float] = []
    done = anyio.Event()

    async def handler(task: Task) -> None:
        latencies.append(time.time() - json.loads(task.payload)["ts"])
        if len(latencies) >= expect:
            done.set()

    # as the asynq-aio worker command runs it (a tree without the setting runs without it)
    freeze = {"gc_freeze": True} if "gc_freeze" in Config.model_fields else {}
    config = Config(
        concurrency=20,
        queues=dict.fromkeys(queue_names(size), 1),
        shutdown_timeout=1.0,
        **{**freeze, **overrides},
    )
    async with Server(opt, config).serve(handler):
        print("READY", flush=True)
        with anyio.move_on_after(60 + expect):
            await done.wait()
    print("RESULT " + json.dumps({"latencies": latencies}), flush=True)


# -- the runner -------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_cpu_seconds(clients: list[Any]) -> float:
    """CPU time the Redis servers (the masters on a cluster) have used, from INFO cpu."""
    return sum(float(i["used_cpu_user"]) + float(i["used_cpu_sys"]) for i in (c.info("cpu") for c in clients))


def _commands(clients: list[Any]) -> int:
    return sum(int(c.info("stats")["total_commands_processed"]) for c in clients)


async def _trickle(url: str, size: int, n: int, gap: float, seed: int) -> None:
    from asynq_aio import Client, RedisClientOpt, RedisClusterClientOpt, Task

    opt: RedisClientOpt | RedisClusterClientOpt
    if url.startswith("cluster://"):
        opt = RedisClusterClientOpt(addrs=url.removeprefix("cluster://").split(","))
    else:
        opt = RedisClientOpt(addr=url.removeprefix("redis://").split("/")[0])
    rng = random.Random(seed)
    names = queue_names(size)
    async with Client(opt) as client:
        await client.ping()
        for _ in range(n):
            queue = rng.choice(names)
            await client.enqueue(Task("pick", {"ts": time.time()}), queue=queue)
            await anyio.sleep(gap)


def measure(
    src: str,
    url: str,
    clients: list[Any],
    size: int,
    n: int,
    gap: float,
    idle_s: float,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, str(ROOT)])),
        "PYTHONUNBUFFERED": "1",
    }
    # -P: without it `python -m` puts the current directory (this tree) before PYTHONPATH, and the
    # baseline would import this tree's asynq_aio instead of its own
    cmd = [
        sys.executable,
        "-P",
        "-m",
        "benchmarks.many_queues",
        "work",
        "--url",
        url,
        "--size",
        str(size),
        "--n",
        str(n),
        "--config",
        json.dumps(overrides or {}),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"worker did not start: {line!r}")
        time.sleep(3.0)  # start-up work settles: first dequeues of every queue, watchers blocking
        before, t0, cpu0 = _commands(clients), time.monotonic(), _cpu_seconds(proc.pid)
        redis_cpu0 = _redis_cpu_seconds(clients)
        time.sleep(idle_s)
        idle_cps = (_commands(clients) - before - len(clients)) / (time.monotonic() - t0)
        idle_cpu = (_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        idle_redis_cpu = (_redis_cpu_seconds(clients) - redis_cpu0) / (time.monotonic() - t0)
        anyio.run(_trickle, url, size, n, gap, size)
        result: dict[str, Any] = {}
        for line in proc.stdout:
            if line.startswith("RESULT "):
                result = json.loads(line.removeprefix("RESULT "))
                break
    finally:
        proc.terminate()
        proc.wait(30)
    lat = [x * 1000 for x in result.get("latencies", [])]
    return {
        "started": len(lat),
        "p50_ms": _pct(lat, 50) if lat else None,
        "p90_ms": _pct(lat, 90) if lat else None,
        "p99_ms": _pct(lat, 99) if lat else None,
        "over_2s": sum(x > 2000 for x in lat) + (n - len(lat)),
        "idle_commands_per_s": round(idle_cps, 1),
        "idle_worker_cpu_pct": round(100 * idle_cpu, 1),
        "idle_redis_cpu_pct": round(100 * idle_redis_cpu, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("work")
    w.add_argument("--url", required=True)
    w.add_argument("--size", type=int, required=True)
    w.add_argument("--n", type=int, required=True)
    w.add_argument("--config", default="{}")
    ap.add_argument("--sizes", default="1,10,100,1000")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--gap", type=float, default=0.02)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle load measured")
    ap.add_argument("--cluster", action="store_true", help="also on a 3-master cluster")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each size, the variants' order alternated")
    ap.add_argument("--baseline", default="", help="a git revision to measure beside this tree")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:field=value,... this tree with those Config fields changed",
    )
    args = ap.parse_args(argv)
    if args.cmd == "work":
        anyio.run(_work, args.url, args.size, args.n, json.loads(args.config))
        return 0

    from benchmarks.procs import ClusterRedis, SingleRedis
    from benchmarks.run import export_tree

    variants: dict[str, tuple[str, dict[str, Any]]] = {"this tree": ("", {})}
    if args.baseline:
        variants[f"at {args.baseline}"] = (export_tree(args.baseline), {})
    for spec in args.variant:
        name, _, fields = spec.partition(":")
        variants[name] = ("", {k: json.loads(v) for k, _, v in (f.partition("=") for f in fields.split(","))})
    single = SingleRedis()
    cluster = ClusterRedis() if args.cluster else None
    targets: list[tuple[str, str, list[Any], Any]] = [("single", single.url, [single.client], single.flush)]
    if cluster is not None:
        targets.append(("cluster", cluster.url, cluster.clients, cluster.flush))
    rows: list[dict[str, Any]] = []
    print(f"load average at start: {os.getloadavg()}")
    try:
        for target, url, clients, flush in targets:
            for size, rnd in ((int(s), r) for s in args.sizes.split(",") for r in range(args.rounds)):
                order = list(variants.items())
                if (size + rnd) % 2:
                    order.reverse()
                for name, (src, overrides) in order:
                    flush()
                    row = {"target": target, "queues": size, "variant": name}
                    row.update(measure(src, url, clients, size, args.n, args.gap, args.idle, overrides))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        single.stop()
        if cluster is not None:
            cluster.stop()
    print(f"load average at end: {os.getloadavg()}")
    print(
        "\n| target | queues | variant | p50 ms | p90 ms | p99 ms | not started within 2 s "
        "| idle Redis commands/s | idle Redis CPU % | idle worker CPU % |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p50 = f"{r['p50_ms']:.2f}" if r["p50_ms"] is not None else "-"
        p90 = f"{r['p90_ms']:.2f}" if r["p90_ms"] is not None else "-"
        p99 = f"{r['p99_ms']:.2f}" if r["p99_ms"] is not None else "-"
        print(
            f"| {r['target']} | {r['queues']:,} | {r['variant']} | {p50} | {p90} | {p99} | {r['over_2s']} "
            f"| {r['idle_commands_per_s']:,.0f} | {r['idle_redis_cpu_pct']:.1f} "
            f"| {r['idle_worker_cpu_pct']:.1f} |"
        )
    out = ROOT / "benchmarks" / "results" / f"many-queues-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "load": os.getloadavg()}, indent=1))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
