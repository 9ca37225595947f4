"""A TCP proxy between a Redis client and a real Redis that injects the faults networks produce:
lost replies (the command ran, its reply never came back), delays, stalls and cut connections.

Real sockets and a real server, no mocks: the client under test talks to ``proxy.port`` as if it were
Redis. The proxy runs its own event loop in a thread, so a test's own loop (and a handler that blocks
it) cannot change what the proxy does.

Faults:
- ``drop_reply_after(trigger, times=1)``: the next chunk a client sends that contains ``trigger``
  (e.g. a script's SHA) is forwarded to Redis, runs there, and then that connection is cut before any
  reply reaches the client: the client sees a dropped connection after its command ran, the
  ambiguous failure every script must survive by being re-sent.
- ``drop_replies_at_rate(trigger, rate)``: the same, for a random share of such chunks.
- ``set_delay(seconds)``: added before each reply is passed on (a slow node).
- ``stall()`` / ``resume()``: commands and replies are held until resumed, as a SIGSTOPped node
  holds them (it runs nothing meanwhile); ``cut_all()``: every open connection is closed now.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from asynq_aio import RedisClusterClientOpt


@dataclass
class _Faults:
    triggers: list[list[bytes | int]] = field(default_factory=list)  # [trigger, times left]
    delay: float = 0.0
    stalled: asyncio.Event | None = None  # set = flowing
    dropped: int = 0  # replies dropped so far
    rate_trigger: bytes = b""
    rate: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(1))


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._loop = asyncio.new_event_loop()
        self._faults = _Faults()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port: int = sock.getsockname()[1]
        sock.close()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._faults.stalled = asyncio.Event()
        self._faults.stalled.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- faults -------------------------------------------------------------------------------------

    def _call(self, fn: object) -> None:
        """Run ``fn`` on the proxy's loop and wait for it: a fault is in force when this returns."""
        assert callable(fn)

        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def drop_reply_after(self, trigger: bytes, times: int = 1) -> None:
        self._call(lambda: self._faults.triggers.append([trigger, times]))

    def drop_replies_at_rate(self, trigger: bytes, rate: float, seed: int = 1) -> None:
        """From now on, lose the reply of each chunk containing ``trigger`` with probability ``rate``
        (seeded, so a run can be repeated); ``rate=0`` stops it."""

        def apply() -> None:
            self._faults.rate_trigger, self._faults.rate = trigger, rate
            self._faults.rng = random.Random(seed)

        self._call(apply)

    def set_delay(self, seconds: float) -> None:
        def apply() -> None:
            self._faults.delay = seconds

        self._call(apply)

    def stall(self) -> None:
        self._call(lambda: self._faults.stalled.clear() if self._faults.stalled else None)

    def resume(self) -> None:
        self._call(lambda: self._faults.stalled.set() if self._faults.stalled else None)

    def cut_all(self) -> None:
        def apply() -> None:
            for w in list(self._writers):
                w.close()

        self._call(apply)

    @property
    def dropped(self) -> int:
        return self._faults.dropped

    def triggers_left(self) -> int:
        return sum(int(t[1]) for t in self._faults.triggers)

    # -- the pipe -----------------------------------------------------------------------------------

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            u_reader, u_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            c_writer.close()
            return
        self._writers |= {c_writer, u_writer}
        cut = asyncio.Event()

        async def client_to_upstream() -> None:
            while not cut.is_set():
                data = await c_reader.read(65536)
                if not data:
                    break
                if self._faults.stalled is not None:  # a stalled node runs nothing until resumed
                    await self._faults.stalled.wait()
                armed = self._armed(data)
                if armed:
                    self._faults.dropped += 1
                    cut.set()  # from now on nothing goes back to the client on this connection
                u_writer.write(data)
                await u_writer.drain()
                if armed:
                    await asyncio.sleep(0.05)  # let Redis run it, then cut the connection
                    break

        async def upstream_to_client() -> None:
            while not cut.is_set():
                data = await u_reader.read(65536)
                if not data:
                    break
                if self._faults.delay:
                    await asyncio.sleep(self._faults.delay)
                if self._faults.stalled is not None:
                    await self._faults.stalled.wait()
                if cut.is_set():
                    break
                c_writer.write(data)
                await c_writer.drain()

        tasks = [asyncio.ensure_future(client_to_upstream()), asyncio.ensure_future(upstream_to_client())]
        with contextlib.suppress(Exception):
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            cut.set()
            for t in pending:
                t.cancel()
        for w in (c_writer, u_writer):
            self._writers.discard(w)
            w.close()

    def _armed(self, data: bytes) -> bool:
        f = self._faults
        if f.rate and f.rate_trigger in data and f.rng.random() < f.rate:
            return True
        for t in self._faults.triggers:
            trigger, left = t
            assert isinstance(trigger, bytes) and isinstance(left, int)
            if left > 0 and trigger in data:
                t[1] = left - 1
                return True
        return False


@contextlib.contextmanager
def fault_proxy(host: str, port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(host, port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def split_addr(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


@contextlib.contextmanager
def proxied_cluster(addrs: list[str]) -> Iterator[tuple[dict[str, FaultProxy], RedisClusterClientOpt]]:
    """A proxy in front of every node of a cluster, and client options that reach the nodes only
    through them (``address_map`` turns the addresses the cluster announces into the proxies')."""
    with contextlib.ExitStack() as stack:
        proxies = {a: stack.enter_context(fault_proxy(*split_addr(a))) for a in addrs}
        opt = RedisClusterClientOpt(
            addrs=[f"127.0.0.1:{p.port}" for p in proxies.values()],
            address_map={a: f"127.0.0.1:{p.port}" for a, p in proxies.items()},
        )
        yield proxies, opt


def report_fault_figures(scenario: str, **figures: object) -> None:
    """Print one run's figures (``pytest -s`` shows them) and, when ``CHAOS_RESULTS`` names a file,
    append them to it as a JSON line, as the chaos suite does: docs/reliability.md quotes them."""
    import json
    import os

    print(f"[fault] {scenario}: " + " ".join(f"{k}={v}" for k, v in figures.items()))  # noqa: T201
    out = os.environ.get("CHAOS_RESULTS")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"scenario": scenario, **figures}) + "\n")
