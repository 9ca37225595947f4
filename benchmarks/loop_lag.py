"""How long an idle worker serving many queues holds its event loop: the stalls a pick-up can fall into.

One Server (concurrency 20, ``gc_freeze`` on as in the worker command) serves ``--queues`` empty
queues on a private single Redis; after six seconds of start-up, a probe in the worker's own loop
sleeps 2 ms at a time for ``--seconds`` and records how late each wake-up is. A late wake-up is
time the loop spent on something else (the background rounds over every queue, a full pass of the
garbage collector); a task arriving then waits for it too.

    python -m benchmarks.loop_lag [--queues 1000] [--seconds 20] [--baseline REV]

``--baseline REV`` runs the same probe with the worker from that git revision's tree, alternated
with this checkout over ``--rounds`` rounds. Printed, and written to
benchmarks/results/loop-lag-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.hotpath import tree_of
from benchmarks.procs import SingleRedis

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import asyncio, json, time, uvloop
from asynq_aio import Config, RedisClientOpt, Server, Task
async def main():
    queues = {f"lag{i}": 1 for i in range(%(queues)d)}
    async def handler(task: Task) -> None:
        pass
    lags = []
    # as the asynq-aio worker command runs it (a tree without the setting runs without it)
    freeze = {"gc_freeze": True} if "gc_freeze" in Config.model_fields else {}
    config = Config(concurrency=20, queues=queues, shutdown_timeout=1.0, **freeze)
    async with Server(RedisClientOpt(addr="127.0.0.1:%(port)d"), config).serve(handler):
        await asyncio.sleep(6.0)  # start-up, and the collector's freeze 5 s in
        end = time.monotonic() + %(seconds)f
        while time.monotonic() < end:
            t = time.monotonic()
            await asyncio.sleep(0.002)
            lags.append(time.monotonic() - t - 0.002)
    print(json.dumps(lags))
uvloop.run(main())
"""


def _summary(lags: list[float], seconds: float) -> dict[str, float]:
    ms = sorted(x * 1000 for x in lags)
    return {
        "p50_ms": ms[len(ms) // 2],
        "p99_ms": ms[int(0.99 * (len(ms) - 1))],
        "max_ms": ms[-1],
        "stalls_over_20ms_per_s": sum(x > 20 for x in ms) / seconds,
        "ms_stalled_over_20ms_per_s": sum(x for x in ms if x > 20) / seconds,
    }


def _probe(tree: Path, port: int, args: argparse.Namespace) -> dict[str, float]:
    code = PROBE % {"queues": args.queues, "port": port, "seconds": args.seconds}
    out = subprocess.run(
        [sys.executable, "-P", "-c", code],
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    return _summary(json.loads(out.stdout.strip().splitlines()[-1]), args.seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queues", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--baseline", help="git revision to compare with")
    args = p.parse_args()
    redis = SingleRedis()
    rows: dict[str, list[dict[str, float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trees = {"checkout": ROOT}
            if args.baseline:
                trees["baseline " + args.baseline] = tree_of(args.baseline, Path(tmp))
            for r in range(args.rounds):
                for name in list(trees) if r % 2 == 0 else list(reversed(trees)):
                    rows.setdefault(name, []).append(_probe(trees[name], redis.port, args))
                    redis.client.flushall()
    finally:
        redis.stop()
    result: dict[str, Any] = {"args": vars(args), "rounds": rows}
    print(f"{args.queues} queues, idle, {args.seconds:g} s per round; each round's figures")
    for name, rounds in rows.items():
        for i, row in enumerate(rounds):
            print(
                f"{name:>20} round {i + 1}: lateness p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                f"max {row['max_ms']:.1f} ms; stalls > 20 ms: {row['stalls_over_20ms_per_s']:.2f}/s, "
                f"{row['ms_stalled_over_20ms_per_s']:.1f} ms/s"
            )
    out = ROOT / "benchmarks" / "results" / f"loop-lag-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
