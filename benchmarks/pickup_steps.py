"""Where an idle worker's pick-up time goes, step by step, and the socket floor under it.

    python -m benchmarks.pickup_steps [--n 300] [--gap 0.02] [--queues 1]

Starts a private Redis, then:

1. **floor**: two plain-socket processes, no asyncio, no redis-py. One blocks in ``BLMOVE`` on a
   list, the other ``LPUSH``es a timestamp every ``--gap`` seconds: the push's round trip, and
   push to the waiter's wake-up. What this machine's kernel and Redis cost, before any Python.
2. **steps**: one asynq-aio worker (``--queues`` queues, concurrency 100) in this process, its
   watchers' wakes and its dequeue wrapped to stamp them, and a producer process enqueueing ``--n``
   tasks one at a time ``--gap`` apart (each into a random one of the queues), each stamped with
   ``time.time()`` just before ``Client.enqueue``. Each
   task's pick-up is split into: stamp to the watcher's wake-up, wake-up to the dequeue's start,
   the dequeue, and its reply to the handler's start. The producer reports its own call time and
   the time from the stamp to its write.

Printed, and written to benchmarks/results/pickup-steps-<time>.json. The stamping wraps internal
methods (``Transport.wait_nonempty``, ``Broker.dequeue``, ``redispy._send``), so it measures
this checkout only; no ``--baseline``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000


def _line(label: str, v: dict[str, float]) -> str:
    return f"{label:26} p50 {v['p50_ms']:.3f}  p90 {v['p90_ms']:.3f}  p99 {v['p99_ms']:.3f} ms"


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": _pct(values, 50), "p90_ms": _pct(values, 90), "p99_ms": _pct(values, 99)}


# -- the socket floor -------------------------------------------------------------------------------


def _pack(*args: object) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return out


def _floor_role(port: int, role: str, n: int, gap: float) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out: list[float] = []
    if role == "wait":
        for _ in range(n):
            s.sendall(_pack("BLMOVE", "floor", "floor", "RIGHT", "RIGHT", 5))
            data = s.recv(1000)
            woke = time.time()
            out.append(woke - float(data.split(b"\r\n")[1]))
            s.sendall(_pack("LPOP", "floor"))
            s.recv(1000)
    else:
        time.sleep(0.5)  # the waiter is blocked first
        for _ in range(n):
            t0 = time.time()
            s.sendall(_pack("LPUSH", "floor", repr(t0)))
            s.recv(100)
            out.append(time.time() - t0)
            time.sleep(gap)
    print(json.dumps(out), flush=True)


def floor(port: int, n: int, gap: float) -> dict[str, Any]:
    me = [sys.executable, "-P", "-m", "benchmarks.pickup_steps"]
    common = ["--port", str(port), "--n", str(n), "--gap", str(gap)]
    waiter = subprocess.Popen(
        [*me, "floor-role", "wait", *common], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.2)
    pusher = subprocess.run(
        [*me, "floor-role", "push", *common], cwd=ROOT, capture_output=True, text=True, check=True
    )
    wait_out, _ = waiter.communicate(60)
    return {
        "push_round_trip": _summary(json.loads(pusher.stdout)),
        "push_to_wake": _summary(json.loads(wait_out)),
    }


# -- the stamped steps ------------------------------------------------------------------------------


def _queue_names(queues: int) -> list[str]:
    return ["steps"] if queues == 1 else [f"steps{i}" for i in range(queues)]


def _produce(port: int, n: int, gap: float, queues: int) -> None:
    """The producer process: stamps, enqueues, reports its call times and stamp-to-write times."""
    import uvloop

    from asynq_aio import Client, RedisClientOpt, Task
    from asynq_aio.protocol._redis import redispy

    writes: list[float] = []
    original = redispy._send

    async def stamped_send(conn: Any, packed: list[bytes]) -> None:
        writes.append(time.time())
        await original(conn, packed)

    redispy._send = stamped_send  # type: ignore[assignment]

    names = _queue_names(queues)
    rng = random.Random(queues)

    async def main() -> None:
        calls: list[float] = []
        to_write: list[float] = []
        async with Client(RedisClientOpt(addr=f"127.0.0.1:{port}")) as client:
            await client.ping()
            for i in range(n):
                writes.clear()
                ts = time.time()
                await client.enqueue(Task("noop", {"i": i, "ts": ts}), queue=rng.choice(names))
                calls.append(time.time() - ts)
                to_write.append(writes[0] - ts if writes else 0.0)
                await asyncio.sleep(gap)
        print(json.dumps({"call": _summary(calls), "stamp_to_write": _summary(to_write)}), flush=True)

    uvloop.run(main())


def steps(port: int, n: int, gap: float, queues: int) -> dict[str, Any]:
    import uvloop

    from asynq_aio import Config, RedisClientOpt, Server, Task
    from asynq_aio._context import current_task
    from asynq_aio.protocol._redis.transport import Transport
    from asynq_aio.protocol.broker import Broker
    from asynq_aio.protocol.keys import queue_keys

    last_wake: dict[str, float] = {}  # pending list -> when its watcher woke
    stamps: dict[str, tuple[float, float, float]] = {}  # task id -> (wake, dequeue sent, reply)
    wait_nonempty = Transport.wait_nonempty
    dequeue = Broker.dequeue

    async def stamped_wait(self: Transport, key: str, timeout: float) -> bytes | None:
        tail = await wait_nonempty(self, key, timeout)
        if tail is not None:
            last_wake[key] = time.time()
        return tail

    async def stamped_dequeue(self: Broker, *args: Any, **kwargs: Any) -> Any:
        sent = time.time()
        got = await dequeue(self, *args, **kwargs)
        replied = time.time()
        if isinstance(got, list) and got:
            woke = last_wake.pop(queue_keys(args[0]).pending, None)
            if woke is not None:
                for item in got:
                    stamps[item.task_id] = (woke, sent, replied)
        return got

    Transport.wait_nonempty = stamped_wait  # type: ignore[method-assign]
    Broker.dequeue = stamped_dequeue  # type: ignore[method-assign,assignment]
    rows: list[tuple[str, float, float]] = []

    async def main() -> dict[str, Any]:
        done = asyncio.Event()

        async def handler(task: Task) -> None:
            rows.append((current_task().id, json.loads(task.payload)["ts"], time.time()))
            if len(rows) >= n:
                done.set()

        producer_cmd = [sys.executable, "-P", "-m", "benchmarks.pickup_steps", "produce"]
        producer_cmd += ["--port", str(port), "--n", str(n), "--gap", str(gap), "--queues", str(queues)]
        config = Config(concurrency=100, queues=dict.fromkeys(_queue_names(queues), 1), gc_freeze=True)
        server = Server(RedisClientOpt(addr=f"127.0.0.1:{port}"), config)
        async with server.serve(handler):
            await asyncio.sleep(1.5 + queues / 100)  # idle (every queue asked once) at the first task
            proc = await asyncio.create_subprocess_exec(*producer_cmd, cwd=ROOT, stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            await asyncio.wait_for(done.wait(), 30)
        return dict(json.loads(out))

    producer = uvloop.run(main())
    parts: dict[str, list[float]] = {
        "stamp_to_wake": [],
        "wake_to_dequeue": [],
        "dequeue": [],
        "reply_to_handler": [],
    }
    for task_id, ts, started in rows:
        if task_id not in stamps:
            continue
        woke, sent, replied = stamps[task_id]
        parts["stamp_to_wake"].append(woke - ts)
        parts["wake_to_dequeue"].append(sent - woke)
        parts["dequeue"].append(replied - sent)
        parts["reply_to_handler"].append(started - replied)
    return {
        "pickup": _summary([started - ts for _, ts, started in rows]),
        "split_tasks": len(parts["stamp_to_wake"]),
        **{k: _summary(v) for k, v in parts.items()},
        "producer": producer,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--gap", type=float, default=0.02)
    ap.add_argument("--port", type=int, default=23998)
    ap.add_argument("--queues", type=int, default=1, help="queues the worker serves")
    args = ap.parse_args()
    if args.role[:1] == ["floor-role"]:
        _floor_role(args.port, args.role[1], args.n, args.gap)
        return
    if args.role[:1] == ["produce"]:
        _produce(args.port, args.n, args.gap, args.queues)
        return
    redis = subprocess.Popen(
        ["redis-server", "--port", str(args.port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        result = {"n": args.n, "gap_s": args.gap, "queues": args.queues}
        result["floor"] = floor(args.port, args.n, args.gap)
        result["steps"] = steps(args.port, args.n, args.gap, args.queues)
    finally:
        redis.terminate()
        redis.wait(10)
    for section in ("floor", "steps"):
        for name, value in result[section].items():
            if isinstance(value, dict) and "p50_ms" in value:
                print(_line(f"{section} {name}", value))
    for name, value in result["steps"]["producer"].items():
        print(_line(f"producer {name}", value))
    out = ROOT / "benchmarks" / "results" / f"pickup-steps-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
