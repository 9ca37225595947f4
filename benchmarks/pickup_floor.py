"""The pick-up floor of this machine with many blocked waiters: no asyncio, no redis-py, no asynq-aio.

    python -m benchmarks.pickup_floor [--sizes 1,10,100,1000] [--n 300] [--gap 0.02] [--load 0,2200]

Starts a private Redis, then for each number of lists and each background load:

- a **waiter** process holds one socket per list, each blocked in an identity ``BLMOVE`` with a 5 s
  timeout (re-armed when it times out), all watched by one ``selectors`` loop. When a list wakes,
  it records push-to-wake, sends ``RPOP`` for that list on a separate socket and waits for its
  reply (the dequeue's round trip), records push-to-taken, then re-arms the list's wait;
- a **pusher** process ``LPUSH``es a ``time.time()`` stamp into a random list every ``--gap``
  seconds, ``--n`` times;
- with a load above 0, a **load** process sends that many ``ZRANGEBYSCORE`` on empty keys a
  second, in 10 pipelined bursts a second (an idle worker's background rounds are of that kind:
  2,200 commands/s at 1,000 queues, `docs/benchmarks.md`).

This is what the kernel and Redis cost for the shape an asynq-aio worker has (one blocked wait per
queue, then one round trip to take the task), before any Python framework runs. The producer's
own call, the dequeue script and the handler's dispatch are not in it, so a worker's pick-up can
only be slower. Printed, and written to benchmarks/results/pickup-floor-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.pickup_steps import _pack, _summary

ROOT = Path(__file__).resolve().parent.parent
BLOCK_SECONDS = 5


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _bulk(data: bytes) -> bytes | None:
    """The value of one whole bulk-string reply (None for a nil reply)."""
    if data.startswith((b"$-1", b"*-1", b"_")):
        return None
    return data.split(b"\r\n")[1]


def _waiter(port: int, lists: int, n: int) -> None:
    take = _connect(port)
    sel = selectors.DefaultSelector()
    for i in range(lists):
        s = _connect(port)
        s.sendall(_pack("BLMOVE", f"f{i}", f"f{i}", "RIGHT", "RIGHT", BLOCK_SECONDS))
        sel.register(s, selectors.EVENT_READ, i)
    print("READY", flush=True)
    wake: list[float] = []
    taken: list[float] = []
    while len(taken) < n:
        for key, _ in sel.select(timeout=30):
            s, i = key.fileobj, key.data
            assert isinstance(s, socket.socket)
            value = _bulk(s.recv(1000))
            if value is not None:
                woke = time.time()
                take.sendall(_pack("RPOP", f"f{i}"))
                _bulk(take.recv(1000))
                got = time.time()
                wake.append(woke - float(value))
                taken.append(got - float(value))
            s.sendall(_pack("BLMOVE", f"f{i}", f"f{i}", "RIGHT", "RIGHT", BLOCK_SECONDS))
    print(json.dumps({"push_to_wake": _summary(wake), "push_to_taken": _summary(taken)}), flush=True)


def _pusher(port: int, lists: int, n: int, gap: float) -> None:
    s = _connect(port)
    for _ in range(n):
        s.sendall(_pack("LPUSH", f"f{random.randrange(lists)}", repr(time.time())))
        s.recv(100)
        time.sleep(gap)


def _load(port: int, per_second: int) -> None:
    s = _connect(port)
    burst = max(1, per_second // 10)
    packed = b"".join(_pack("ZRANGEBYSCORE", f"z{i}", "-inf", "+inf") for i in range(burst))
    while True:
        t0 = time.monotonic()
        s.sendall(packed)
        got = 0
        while got < burst:
            got += s.recv(1 << 16).count(b"\r\n")  # each empty reply is one "*0\r\n"
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))


def one(port: int, lists: int, n: int, gap: float, load: int) -> dict[str, Any]:
    me = [sys.executable, "-P", "-m", "benchmarks.pickup_floor", "--port", str(port)]
    common = ["--lists", str(lists), "--n", str(n), "--gap", str(gap)]
    loader = None
    if load:
        loader = subprocess.Popen([*me, "role", "load", "--load", str(load)], cwd=ROOT)
    waiter = subprocess.Popen([*me, "role", "wait", *common], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert waiter.stdout is not None
        assert waiter.stdout.readline().strip() == "READY"
        time.sleep(1.0)  # idle when the first push arrives
        subprocess.run([*me, "role", "push", *common], cwd=ROOT, check=True)
        out, _ = waiter.communicate(60)
    finally:
        if loader is not None:
            loader.kill()
            loader.wait()
    return {"lists": lists, "load_per_s": load, **json.loads(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="1,10,100,1000")
    ap.add_argument("--load", default="0,2200")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--gap", type=float, default=0.02)
    ap.add_argument("--port", type=int, default=23997)
    ap.add_argument("--lists", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role[:1] == ["role"]:
        kind = args.role[1]
        if kind == "wait":
            _waiter(args.port, args.lists, args.n)
        elif kind == "push":
            _pusher(args.port, args.lists, args.n, args.gap)
        else:
            _load(args.port, int(args.load))
        return
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(args.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxclients",
            "10100",
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    rows: list[dict[str, Any]] = []
    try:
        for lists in (int(x) for x in args.sizes.split(",")):
            for load in (int(x) for x in args.load.split(",")):
                row = one(args.port, lists, args.n, args.gap, load)
                rows.append(row)
                w, t = row["push_to_wake"], row["push_to_taken"]
                print(
                    f"{lists:5} lists, load {load:5}/s: "
                    f"push to wake p50 {w['p50_ms']:.3f} p99 {w['p99_ms']:.3f}  "
                    f"push to taken p50 {t['p50_ms']:.3f} p99 {t['p99_ms']:.3f} ms",
                    flush=True,
                )
    finally:
        redis.terminate()
        redis.wait(10)
    out = ROOT / "benchmarks" / "results" / f"pickup-floor-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"n": args.n, "gap_s": args.gap, "rows": rows}, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
