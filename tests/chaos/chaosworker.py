"""A worker process for chaos tests: serves one queue with the chaos handler, recording every run in
the shared RunLog file, until it is SIGKILLed (or gets SIGTERM)::

    python tests/chaos/chaosworker.py --queue Q (--url redis://... | --cluster h:p,h:p) \
        --runlog FILE --name W --lease 2 --work 0.2

``harness.spawn_worker`` starts it with ``tests/`` and ``tests/chaos/`` on PYTHONPATH.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio
from harness import RunLog, chaos_config, chaos_mux
from workerproc import conn_opt

from asynq_aio import Server


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--queue", required=True)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="redis:// URL of a single Redis")
    target.add_argument("--cluster", help="comma-separated host:port seeds of a Redis Cluster")
    p.add_argument("--runlog", required=True, type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--lease", type=float, default=2.0)
    p.add_argument("--work", type=float, default=0.2, help="seconds each task's handler works")
    p.add_argument("--concurrency", type=int, default=4)
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    kind = "single" if args.url else "cluster"
    opt = conn_opt(kind, args.url, args.cluster.split(",") if args.cluster else None)
    runlog = RunLog(args.runlog)
    cfg = chaos_config(args.queue, lease=args.lease, concurrency=args.concurrency)
    try:
        await Server(opt, cfg).run(chaos_mux(runlog, args.name, args.work))
    finally:
        runlog.close()


def main(argv: list[str] | None = None) -> None:
    anyio.run(_serve, _parse_args(argv))


if __name__ == "__main__":
    main()
